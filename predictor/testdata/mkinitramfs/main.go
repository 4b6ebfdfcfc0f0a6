// Command mkinitramfs writes an initramfs (qemu.BuildInitramfs: busybox,
// /init and the markers pagecast's Linux guests print) holding programs
// and their shared libraries, for record-real.sh.
//
//	go run ./predictor/testdata/mkinitramfs -dir DIR -command FILE [-stay] PATH|INITRAMFS=HOST ...
//
// A bare PATH is copied to the same path in the initramfs; INITRAMFS=HOST
// copies HOST to INITRAMFS. Either comes with every library ldd lists for
// it, if it is a dynamic executable.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"

	"github.com/pagecast/pagecast/qemu"
)

func main() {
	dir := flag.String("dir", ".", "directory to write initramfs.cpio.gz in")
	command := flag.String("command", "", "file holding the sh script /init runs")
	stay := flag.Bool("stay", false, "keep the guest running after the command")
	flag.Parse()
	if err := run(*dir, *command, *stay, flag.Args()); err != nil {
		slog.Error("mkinitramfs", "err", err)
		os.Exit(1)
	}
}

func run(dir, command string, stay bool, args []string) error {
	script, err := os.ReadFile(command)
	if err != nil {
		return fmt.Errorf("read command: %w", err)
	}
	files := map[string]string{}
	for _, a := range args {
		name, host, ok := strings.Cut(a, "=")
		if !ok {
			name, host = a, a
		}
		files[name] = host
		for _, l := range sharedLibraries(host) {
			files[l] = l
		}
	}
	path, err := qemu.BuildInitramfs(dir, qemu.InitramfsOptions{Command: string(script), Stay: stay, Files: files})
	if err != nil {
		return err
	}
	fmt.Println(path)
	return nil
}

// sharedLibraries lists the libraries, the dynamic loader included, that
// ldd says an executable loads; none for a file that is not a dynamic
// executable.
func sharedLibraries(exe string) []string {
	out, err := exec.Command("ldd", exe).Output()
	if err != nil {
		return nil
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
			}
		}
	}
	return libs
}
