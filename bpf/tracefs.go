package bpf

import (
	"fmt"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// tracefsDir is where the kernel's tracing file system is mounted, when
// nothing has mounted it yet.
const tracefsDir = "/sys/kernel/tracing"

var tracefsOnce struct {
	sync.Once
	err error
}

// ensureTracefs mounts tracefs at /sys/kernel/tracing when neither it nor
// debugfs' tracing directory is there, as perf does: attaching to a
// tracepoint reads the tracepoint's ID from it, and a freshly booted
// minimal system (a container host, a CI machine) often has neither
// mounted. It needs root, which loading the programs needs anyway.
func ensureTracefs() error {
	tracefsOnce.Do(func() {
		for _, d := range []string{tracefsDir + "/events", "/sys/kernel/debug/tracing/events"} {
			if _, err := os.Stat(d); err == nil {
				return
			}
		}
		if err := unix.Mount("tracefs", tracefsDir, "tracefs", 0, ""); err != nil {
			tracefsOnce.err = fmt.Errorf("neither tracefs nor debugfs is mounted, and mounting tracefs at %s failed (mount -t tracefs tracefs %s as root): %w",
				tracefsDir, tracefsDir, err)
			return
		}
		slog.Info("mounted tracefs: tracepoints attach through it", "path", tracefsDir)
	})
	return tracefsOnce.err
}
