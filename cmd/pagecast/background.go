package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"

	"github.com/urfave/cli/v2"
)

// readyFDEnv names the descriptor on which a vm run started by
// --background says it is ready. It is taken out of the environment at
// once (takeReadyPipe), so no QEMU or shell started later inherits it.
const readyFDEnv = "PAGECAST_READY_FD"

var (
	readyMu   sync.Mutex
	readyPipe *os.File // set in a vm run started by --background
	inChild   bool
)

// takeReadyPipe, called first thing in main, takes the pipe a vm run
// --background left this process, if any, and keeps it from every
// process this one starts.
func takeReadyPipe() {
	s, ok := os.LookupEnv(readyFDEnv)
	if !ok {
		return
	}
	os.Unsetenv(readyFDEnv)
	inChild = true
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 3 {
		return
	}
	syscall.CloseOnExec(fd)
	readyPipe = os.NewFile(uintptr(fd), "ready")
}

// sayReady tells the vm run --background that started this one that the
// VM is ready: its QMP socket is served, and, with --incoming, the
// migration's port listens. Once only; a no-op elsewhere.
func sayReady() {
	readyMu.Lock()
	defer readyMu.Unlock()
	if readyPipe == nil {
		return
	}
	fmt.Fprintf(readyPipe, "ready %d\n", os.Getpid())
	readyPipe.Close()
	readyPipe = nil
}

// runInBackground is --background (vm run, receive): it starts this command again in
// a session of its own, its output still on this one's stdout and
// stderr, and returns once it is ready (sayReady: a VM's QMP served, with
// --incoming listening; receive listening), or with status 1 once it has
// exited first, its error printed by it. A SIGINT or SIGTERM meanwhile stops it. Where vm run
// and a shell's "&" left a script waiting for a socket that never came
// if the VM was refused (walk 147), this returns saying so.
func runInBackground(c *cli.Context, name string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("--background: find pagecast's binary: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("--background: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// Its own session: the terminal's Ctrl-C and hang-up are not its.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("--background: start %s: %w", name, err)
	}
	w.Close()

	said := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		said <- line
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	for {
		select {
		case line := <-said:
			if line != "" {
				pid := cmd.Process.Pid
				cmd.Process.Release()
				fmt.Fprintf(c.App.ErrWriter, "pagecast: %s is ready and runs in the background, pid %d (%s)\n", name, pid, stopHint(name, pid))
				return nil
			}
			// The pipe closed unsaid: it exited, having said why.
			err := cmd.Wait()
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				return reported{fmt.Errorf("%s exited before it was ready: %w", name, err)}
			}
			if err != nil {
				return fmt.Errorf("%s exited before it was ready: %w", name, err)
			}
			return fmt.Errorf("%s exited before it was ready (stopped by a signal or QMP quit)", name)
		case s := <-sig:
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			return fmt.Errorf("interrupted (%v) before %s was ready: it is stopped", s, name)
		}
	}
}

// stopHint says how to stop what runInBackground left running.
func stopHint(name string, pid int) string {
	if name == "receive" {
		return fmt.Sprintf("it exits once the guest runs here, or the migration fails; kill %d stops it before", pid)
	}
	return fmt.Sprintf("QMP quit or kill %d stops it", pid)
}

// writePidfile writes this process's pid to path, as QEMU's -pidfile, in
// place at once (a temporary file renamed), and returns what removes it.
func writePidfile(path string) (remove func(), err error) {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("--pidfile: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("--pidfile: %w", err)
	}
	return func() { os.Remove(path) }, nil
}
