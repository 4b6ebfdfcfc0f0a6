package vmm

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/qmpserver"
)

// RegisterQMP installs the monitor's QMP commands on s: the subset of
// QEMU's that pagecast's tools use, with QEMU's names and reply shapes, and
// x-pagecast-* extensions. quit is called for the quit command.
func (vm *VM) RegisterQMP(s *qmpserver.Server, quit func()) {
	c := &qmpCommands{vm: vm}
	s.Handle("query-status", qmpserver.NoArgs(c.queryStatus))
	// Under -incoming, as QEMU's: stop has the guest stay paused once
	// the migration has come, cont has it run.
	s.Handle("stop", qmpserver.NoArgs(func(context.Context, json.RawMessage) (any, error) { return nil, vm.Pause() }))
	s.Handle("cont", func(_ context.Context, raw json.RawMessage) (any, error) {
		args, err := qmpserver.Args[struct {
			Force bool `json:"x-pagecast-force"`
		}](raw)
		if err != nil {
			return nil, err
		}
		if args.Force {
			return nil, vm.ContForced()
		}
		return nil, vm.Cont()
	})
	s.Handle("quit", qmpserver.NoArgs(func(context.Context, json.RawMessage) (any, error) {
		go quit()
		return nil, nil
	}))
	s.Handle("query-memory-size-summary", qmpserver.NoArgs(func(context.Context, json.RawMessage) (any, error) {
		return map[string]any{"base-memory": vm.MemoryBytes(), "plugged-memory": 0}, nil
	}))
	s.Handle("query-cpus-fast", qmpserver.NoArgs(c.queryCPUs))
	s.Handle("calc-dirty-rate", c.calcDirtyRate)
	// QEMU 8.2's takes calc-time-unit, which a client of a newer QEMU may
	// send: the reply is in the unit calc-dirty-rate was asked in.
	s.Handle("query-dirty-rate", func(context.Context, json.RawMessage) (any, error) { return vm.QueryDirtyRate(), nil })
	s.Handle("x-pagecast-query-memslots", qmpserver.NoArgs(c.queryMemslots))
	s.Handle("x-pagecast-query-guest", qmpserver.NoArgs(c.queryGuest))
	s.Handle("x-pagecast-guest-go", qmpserver.NoArgs(c.guestGo))
	s.Handle("x-pagecast-dirty-log-start", qmpserver.NoArgs(c.dirtyLogStart))
	s.Handle("x-pagecast-dirty-log-stop", qmpserver.NoArgs(c.dirtyLogStop))
	s.Handle("x-pagecast-dirty-log-harvest", c.dirtyLogHarvest)
}

type qmpCommands struct {
	vm *VM

	mu   sync.Mutex
	logs map[uint64]*DirtyLog // by QMP client: each started by its x-pagecast-dirty-log-start, closed by its stop or its hang-up
}

func (c *qmpCommands) queryStatus(context.Context, json.RawMessage) (any, error) {
	st := c.vm.RunState()
	return map[string]any{"status": st, "running": st == StateRunning, "singlestep": false}, nil
}

func (c *qmpCommands) queryCPUs(context.Context, json.RawMessage) (any, error) {
	out := make([]map[string]any, c.vm.VCPUs())
	for i := range out {
		out[i] = map[string]any{"cpu-index": i, "qom-path": fmt.Sprintf("/machine/unattached/device[%d]", i),
			"thread-id": c.vm.vcpus[i].tid.Load(), "target": "x86_64"}
	}
	return out, nil
}

func (c *qmpCommands) calcDirtyRate(_ context.Context, raw json.RawMessage) (any, error) {
	args, err := qmpserver.Args[struct {
		CalcTime     *int64 `json:"calc-time"`
		CalcTimeUnit string `json:"calc-time-unit"`
		SamplePages  uint64 `json:"sample-pages"`
		Mode         string `json:"mode"`
	}](raw)
	if err != nil {
		return nil, err
	}
	unit := time.Second
	switch args.CalcTimeUnit {
	case "", "second":
	case "millisecond":
		unit = time.Millisecond
	default:
		return nil, qmpserver.GenericError("calc-time-unit %q: want second or millisecond", args.CalcTimeUnit)
	}
	if args.CalcTime == nil {
		return nil, qmpserver.GenericError("Parameter 'calc-time' is missing") // QEMU's words
	}
	if args.Mode == "" {
		args.Mode = RateModePageSampling
	}
	if t := *args.CalcTime; t < 0 || t > int64(time.Minute/unit) {
		// Checked here, before the product wraps (walk 128: "calc-time
		// 2157299h53m50s" of 99999999999 s asked for).
		return nil, qmpserver.GenericError("calc-time %d %s out of range 0.1s..60s", t, cmp.Or(args.CalcTimeUnit, "second"))
	}
	return nil, c.vm.CalcDirtyRate(time.Duration(*args.CalcTime)*unit, args.Mode, args.SamplePages)
}

func (c *qmpCommands) queryMemslots(context.Context, json.RawMessage) (any, error) {
	return []map[string]any{{
		"slot": 0, "guest-phys-addr": 0, "size": c.vm.MemoryBytes(), "page-size": PageSize,
		"dirty-logging": c.vm.DirtyLogging(), "dirty-mode": c.vm.DirtyMode(),
	}}, nil
}

func (c *qmpCommands) queryGuest(context.Context, json.RawMessage) (any, error) {
	s, err := c.vm.GuestStatus()
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"state":            s.String(),
		"workload":         s.Workload,
		"cpus":             s.CPUs,
		"arena-first-page": s.ArenaFirstPage,
		"arena-pages":      s.ArenaPages,
		"error":            s.Error,
		"progress":         s.TotalProgress(),
		"vcpu-progress":    s.Progress,
		"status-addr":      c.vm.kernel.StatusAddr,
	}, nil
}

// guestGo releases a guest waiting at its start gate (workload gate=1).
func (c *qmpCommands) guestGo(context.Context, json.RawMessage) (any, error) {
	return nil, c.vm.ReleaseGate()
}

// dirtyLogStart opens a dirty log for the client that asks: each client
// harvests its own, and logging stays on while any client's is open (one
// profiler stopping used to close the log another was harvesting, which
// then read 0 pages an epoch). A client that hangs up without stopping,
// killed, has its log closed then.
func (c *qmpCommands) dirtyLogStart(ctx context.Context, _ json.RawMessage) (any, error) {
	id, _ := qmpserver.ClientID(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.logs[id] != nil {
		return nil, nil
	}
	log, err := c.vm.StartDirtyLog()
	if err != nil {
		return nil, err
	}
	if c.logs == nil {
		c.logs = map[uint64]*DirtyLog{}
	}
	c.logs[id] = log
	context.AfterFunc(ctx, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.logs[id] == log {
			log.Close()
			delete(c.logs, id)
		}
	})
	return nil, nil
}

func (c *qmpCommands) dirtyLogStop(ctx context.Context, _ json.RawMessage) (any, error) {
	id, _ := qmpserver.ClientID(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	log := c.logs[id]
	if log == nil {
		return nil, nil
	}
	delete(c.logs, id)
	return nil, log.Close()
}

// dirtyLogHarvest returns the pages dirtied since the last harvest (or
// dirty-log-start): their count, and when asked for, the pages as runs
// [first, count], which keeps replies for contiguous writes small (go-qemu
// reads replies of at most 64 KiB).
func (c *qmpCommands) dirtyLogHarvest(ctx context.Context, raw json.RawMessage) (any, error) {
	args, err := qmpserver.Args[struct {
		Pages bool `json:"pages"`
	}](raw)
	if err != nil {
		return nil, err
	}
	id, _ := qmpserver.ClientID(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	log := c.logs[id]
	if log == nil {
		return nil, qmpserver.GenericError("dirty logging was not started on this connection (x-pagecast-dirty-log-start)")
	}
	set, err := log.Harvest()
	if err != nil {
		return nil, err
	}
	reply := map[string]any{"dirty-pages": set.Count()}
	if args.Pages {
		runs := set.Runs()
		if runs == nil {
			runs = [][2]uint64{} // [] as a list, not null
		}
		reply["ranges"] = runs
	}
	return reply, nil
}

// ReleaseGate lets a guest started with gate=1 begin its workload.
func (vm *VM) ReleaseGate() error {
	var one [4]byte
	binary.LittleEndian.PutUint32(one[:], 1)
	return vm.WriteGuest(vm.kernel.StatusAddr+guest.OffGo, one[:])
}

// WriteReplayTable stores pages in the guest's replay table and sets its
// length, for the replay workload.
func (vm *VM) WriteReplayTable(pages []uint32) error {
	if len(pages) > guest.ReplayTableMax {
		return fmt.Errorf("replay table: %d pages, above the table's %d", len(pages), guest.ReplayTableMax)
	}
	buf := make([]byte, 4*len(pages))
	for i, p := range pages {
		binary.LittleEndian.PutUint32(buf[4*i:], p)
	}
	if err := vm.WriteGuest(guest.ReplayTableAddr, buf); err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(buf[:4], uint32(len(pages)))
	return vm.WriteGuest(vm.kernel.StatusAddr+guest.OffReplayCount, buf[:4])
}
