package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/migrationmetrics"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qmpserver"
)

// migrate --control: QMP on a socket of migrate's own for the migration
// under way. migrate holds the VM's QMP socket while it runs (QEMU serves
// one client a socket), so without it nothing could change the link cap
// or the downtime limit midway, as virsh migrate-setspeed and
// migrate-setmaxdowntime do through libvirt's monitor.

// controlParams are the parameters --control changes, as
// migrate-set-parameters and query-migrate-parameters spell them.
type controlParams struct {
	MaxBandwidth  *uint64 `json:"max-bandwidth,omitempty"`  // bytes/s; 0: no cap
	DowntimeLimit *uint64 `json:"downtime-limit,omitempty"` // ms
}

// migrationControl reads and changes the migration under way, whichever
// runs it: pagecast's engine in this process, or the source's monitor.
type migrationControl struct {
	set    func(controlParams) error
	params func() (controlParams, error)
	info   func() (migrator.Info, error)
	cancel func() error
}

// listenControl opens --control's socket before the migration begins, so
// that a path in use is refused before anything is sent; nil without
// --control.
func listenControl(flag string) (net.Listener, error) {
	if flag == "" {
		return nil, nil
	}
	path, ok := strings.CutPrefix(flag, "unix:")
	if !ok || path == "" {
		return nil, fmt.Errorf("--control %q: want unix:PATH", flag)
	}
	l, err := qmpserver.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("--control: %w", err)
	}
	return l, nil
}

// controlServer serves --control (serveControl).
type controlServer struct {
	stop     func()
	downtime atomic.Int64 // the last downtime limit set, ns; 0: none
	changed  atomic.Bool  // a set changed the cap or the limit
}

// autoNote is said under auto's prediction against the outcome where
// --control changed the link cap or the downtime limit midway: auto
// predicted with those the migration began with (a review walk: +116%
// said of a migration whose cap was doubled midway, unexplained).
func (s *controlServer) autoNote(w io.Writer) {
	if s.changed.Load() {
		fmt.Fprintln(w, "note: the link cap or the downtime limit changed midway (--control); auto predicted with those the migration began with")
	}
}

// Stop stops serving, closes the listener and removes its socket.
func (s *controlServer) Stop() { s.stop() }

// limit is the downtime limit in force at the end: the last set through
// --control, else given, --downtime-limit's. The summary and --json
// judge the pause by it.
func (s *controlServer) limit(given time.Duration) time.Duration {
	if d := time.Duration(s.downtime.Load()); d > 0 {
		return d
	}
	return given
}

// serveControl serves ctl's commands on l until Stop, and says on w each
// change made. With l nil it serves nothing.
func serveControl(l net.Listener, ctl migrationControl, log *slog.Logger, w io.Writer) *controlServer {
	cs := &controlServer{stop: func() {}}
	if l == nil {
		return cs
	}
	srv := qmpserver.New(log, "pagecast migrate")
	srv.Handle("migrate-set-parameters", func(_ context.Context, raw json.RawMessage) (any, error) {
		var members map[string]json.RawMessage
		if err := json.Unmarshal(raw, &members); err == nil {
			for name := range members {
				if name != "max-bandwidth" && name != "downtime-limit" {
					return nil, qmpserver.GenericError("Parameter '%s': only max-bandwidth and downtime-limit change during a migration (migrate's other flags are fixed when it begins)", name)
				}
			}
		}
		p, err := qmpserver.Args[controlParams](raw)
		if err != nil {
			return nil, err
		}
		if p.DowntimeLimit != nil && (*p.DowntimeLimit < 1 || *p.DowntimeLimit > 2000000) {
			return nil, qmpserver.GenericError("Parameter 'downtime_limit' expects an integer in the range of 1 to 2000000 milliseconds")
		}
		var now controlParams
		if p.MaxBandwidth != nil || p.DowntimeLimit != nil {
			// The pair must still let a page through in the limit.
			if now, err = ctl.params(); err != nil {
				return nil, qmpserver.GenericError("%s", err.Error())
			}
			bw := valueOr(p.MaxBandwidth, now.MaxBandwidth, 0)
			dl := valueOr(p.DowntimeLimit, now.DowntimeLimit, uint64(migrator.DefaultDowntimeLimit.Milliseconds()))
			if err := migrator.CheckLink(bw, time.Duration(dl)*time.Millisecond); err != nil {
				return nil, qmpserver.GenericError("%s", err.Error())
			}
		}
		if err := ctl.set(p); err != nil {
			return nil, qmpserver.GenericError("%s", err.Error())
		}
		// Said where it changes what was in force (a walk's client
		// setting the same limit 4636 times had it said as often).
		var changed []string
		if p.MaxBandwidth != nil && (now.MaxBandwidth == nil || *now.MaxBandwidth != *p.MaxBandwidth) {
			changed = append(changed, "link cap "+capString(*p.MaxBandwidth))
		}
		if p.DowntimeLimit != nil {
			d := time.Duration(*p.DowntimeLimit) * time.Millisecond
			cs.downtime.Store(int64(d))
			if now.DowntimeLimit == nil || *now.DowntimeLimit != *p.DowntimeLimit {
				changed = append(changed, fmt.Sprintf("downtime limit %v", d))
			}
		}
		if len(changed) > 0 {
			cs.changed.Store(true)
			// On a terminal over the bar, which is redrawn after; a
			// blank line before it ended the bar's, and stood alone
			// under --quiet or in a log (walk 155).
			clear := ""
			if terminal(w) {
				clear = "\r\033[K"
			}
			fmt.Fprintf(w, "%spagecast: --control: %s from now on (migrate-set-parameters)\n", clear, strings.Join(changed, ", "))
		}
		return nil, nil
	})
	srv.Handle("query-migrate-parameters", qmpserver.NoArgs(func(context.Context, json.RawMessage) (any, error) {
		p, err := ctl.params()
		if err != nil {
			return nil, qmpserver.GenericError("%s", err.Error())
		}
		return p, nil
	}))
	srv.Handle("query-migrate", qmpserver.NoArgs(func(context.Context, json.RawMessage) (any, error) {
		i, err := ctl.info()
		if err != nil {
			return nil, qmpserver.GenericError("%s", err.Error())
		}
		return i, nil
	}))
	srv.Handle("migrate_cancel", qmpserver.NoArgs(func(context.Context, json.RawMessage) (any, error) {
		if err := ctl.cancel(); err != nil {
			return nil, qmpserver.GenericError("%s", err.Error())
		}
		return nil, nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ctx, l); err != nil {
			log.Warn("--control stopped serving", "err", err)
		}
	}()
	cs.stop = func() { cancel(); <-done }
	return cs
}

// capString says a link cap, bytes/s.
func capString(bw uint64) string {
	if bw == 0 {
		return "none"
	}
	return units.FormatBytes(float64(bw)) + "/s"
}

// valueOr is *a if set, else *b if set, else def.
func valueOr(a, b *uint64, def uint64) uint64 {
	switch {
	case a != nil:
		return *a
	case b != nil:
		return *b
	}
	return def
}

// engineControl controls m, pagecast's engine's migration in this process;
// metrics, if not nil, is told a new link cap (a cap lifted, 0, as well).
func engineControl(m *migrator.Migration, metrics *migrationmetrics.Exporter) migrationControl {
	return migrationControl{
		set: func(p controlParams) error {
			select {
			case <-m.Done():
				return fmt.Errorf("the migration has ended (%s)", m.Info().Status)
			default:
			}
			if p.MaxBandwidth != nil {
				m.SetBandwidth(*p.MaxBandwidth)
				if metrics != nil {
					metrics.SetBandwidth(*p.MaxBandwidth)
				}
			}
			if p.DowntimeLimit != nil {
				m.SetDowntimeLimit(time.Duration(*p.DowntimeLimit) * time.Millisecond)
			}
			return nil
		},
		params: func() (controlParams, error) {
			bw, dl := m.Bandwidth(), uint64(m.DowntimeLimit().Milliseconds())
			return controlParams{MaxBandwidth: &bw, DowntimeLimit: &dl}, nil
		},
		info:   func() (migrator.Info, error) { return m.Info(), nil },
		cancel: m.Cancel,
	}
}

// monitorControl controls the migration the source's monitor runs (QEMU's
// own by plan, or pagecast's monitor's where plan is nil), through
// migrate's connection to it; metrics, if not nil, is told a new link cap
// (QEMU's query-migrate does not say it).
func monitorControl(mon qmp.Monitor, plan *migrator.QEMUPlan, metrics *migrationmetrics.Exporter) migrationControl {
	ended := func() error {
		i, err := migrator.Query(mon)
		if err != nil {
			return err
		}
		if migrationmetrics.Finished(i.Status) {
			return fmt.Errorf("the migration has ended (%s)", i.Status)
		}
		return nil
	}
	run := func(cmd string, args, ret any) error {
		if err := qemu.QMP(mon, cmd, args, ret); err != nil {
			return fmt.Errorf("the source's monitor: %w", err)
		}
		return nil
	}
	return migrationControl{
		set: func(p controlParams) error {
			var err error
			if plan != nil {
				var dl *time.Duration
				if p.DowntimeLimit != nil {
					d := time.Duration(*p.DowntimeLimit) * time.Millisecond
					dl = &d
				}
				if err = ended(); err == nil {
					err = plan.Adjust(mon, p.MaxBandwidth, dl)
				}
			} else if err = ended(); err == nil {
				// pagecast's monitor keeps what is set for its next
				// migration too: not once this one has ended.
				err = run("migrate-set-parameters", p, nil)
			}
			if err != nil {
				return err
			}
			if p.MaxBandwidth != nil && metrics != nil {
				metrics.SetBandwidth(*p.MaxBandwidth)
			}
			return nil
		},
		params: func() (controlParams, error) {
			var p controlParams
			err := run("query-migrate-parameters", nil, &p)
			return p, err
		},
		info: func() (migrator.Info, error) { return migrator.Query(mon) },
		cancel: func() error {
			i, err := migrator.Query(mon)
			if err != nil {
				return err
			}
			switch {
			case migrator.InPostcopy(i.Status):
				return fmt.Errorf("the migration is in %s: the guest runs on the destination, and a cancel would lose it", i.Status)
			case migrationmetrics.Finished(i.Status):
				return fmt.Errorf("the migration has ended (%s)", i.Status)
			}
			return migrator.Cancel(mon)
		},
	}
}
