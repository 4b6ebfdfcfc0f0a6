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

// runInBackground is vm run --background: it starts this command again in
// a session of its own, its output still on this one's stdout and
// stderr, and returns once that VM is ready (QMP served; with --incoming,
// listening), or with status 1 once it has exited first, its error
// printed by it. A SIGINT or SIGTERM meanwhile stops it. Where vm run
// and a shell's "&" left a script waiting for a socket that never came
// if the VM was refused (walk 147), this returns saying so.
func runInBackground(c *cli.Context) error {
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
		return fmt.Errorf("--background: start vm run: %w", err)
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
				fmt.Fprintf(c.App.ErrWriter, "pagecast: vm run is ready and runs in the background, pid %d (QMP quit or kill %d stops it)\n", pid, pid)
				return nil
			}
			// The pipe closed unsaid: it exited, having said why.
			err := cmd.Wait()
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				return reported{fmt.Errorf("vm run exited before it was ready: %w", err)}
			}
			if err != nil {
				return fmt.Errorf("vm run exited before it was ready: %w", err)
			}
			return errors.New("vm run exited before it was ready (stopped by a signal or QMP quit)")
		case s := <-sig:
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			return fmt.Errorf("interrupted (%v) before the VM was ready: it is stopped", s)
		}
	}
}
