package migrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/qmptest"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/proc"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
)

// clientFake is a monitor answering from reply, and the commands it got,
// each re-encoded (arguments with sorted keys) for comparison.
func clientFake(reply func(cmd qmp.Command) (any, error)) (qmp.Monitor, *[]string) {
	var sent []string
	mon := qmptest.NewMonitor(func(cmd qmp.Command) (any, error) {
		b, err := json.Marshal(cmd)
		if err != nil {
			return nil, err
		}
		sent = append(sent, string(b))
		return reply(cmd)
	})
	return mon, &sent
}

// clientOK is the reply of a command that returns nothing.
func clientOK(qmp.Command) (any, error) {
	return map[string]any{"return": map[string]any{}}, nil
}

func TestClientSetParameters(t *testing.T) {
	tests := []struct {
		name string
		p    Params
		want []string
	}{
		{"zero", Params{}, nil},
		{"qemu", Params{MaxBandwidth: 64 << 20, DowntimeLimit: 300 * time.Millisecond},
			[]string{`{"execute":"migrate-set-parameters","arguments":{"downtime-limit":300,"max-bandwidth":67108864}}`}},
		{"pagecast", Params{Mode: "predictive", MaxRounds: 30, Profile: "testdata/awk.trace"},
			[]string{`{"execute":"migrate-set-parameters","arguments":{"x-pagecast-max-rounds":30,"x-pagecast-mode":"predictive","x-pagecast-profile":"testdata/awk.trace"}}`}},
		{"sub-millisecond downtime", Params{DowntimeLimit: 500 * time.Microsecond},
			[]string{`{"execute":"migrate-set-parameters","arguments":{"downtime-limit":1}}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mon, sent := clientFake(clientOK)
			if err := SetParameters(mon, tt.p); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(*sent, tt.want) {
				t.Errorf("sent %q, want %q", *sent, tt.want)
			}
		})
	}
}

func TestClientCommands(t *testing.T) {
	mon, sent := clientFake(func(cmd qmp.Command) (any, error) {
		if cmd.Execute == "query-migrate" {
			return map[string]any{"return": map[string]any{
				"status": "active", "total-time": 1200, "expected-downtime": 40,
				"ram": map[string]any{"transferred": 4096, "dirty-sync-count": 2},
			}}, nil
		}
		return clientOK(cmd)
	})
	if err := Migrate(mon, "tcp:127.0.0.1:4444"); err != nil {
		t.Fatal(err)
	}
	info, err := Query(mon)
	if err != nil {
		t.Fatal(err)
	}
	if err := Cancel(mon); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"execute":"migrate","arguments":{"uri":"tcp:127.0.0.1:4444"}}`,
		`{"execute":"query-migrate"}`,
		`{"execute":"migrate_cancel"}`,
	}
	if !slices.Equal(*sent, want) {
		t.Errorf("sent %q, want %q", *sent, want)
	}
	if info.Status != StatusActive || info.TotalTime != 1200 || info.ExpectedDowntime != 40 ||
		info.RAM == nil || info.RAM.Transferred != 4096 || info.RAM.DirtySyncCount != 2 {
		t.Errorf("query-migrate decoded as %+v (ram %+v)", info, info.RAM)
	}
}

func TestClientErrors(t *testing.T) {
	const desc = "Parameter 'x-pagecast-mode' is unexpected"
	tests := []struct {
		name  string
		reply func(qmp.Command) (any, error)
		want  string
	}{
		// go-qemu's SocketMonitor turns a QMP error into a Go error.
		{"monitor error", func(qmp.Command) (any, error) { return nil, errors.New(desc) },
			"migrate-set-parameters: " + desc},
		// Other monitors hand back the raw reply.
		{"error reply", func(qmp.Command) (any, error) {
			return map[string]any{"error": map[string]any{"class": "GenericError", "desc": desc}}, nil
		}, "migrate-set-parameters: " + desc},
		{"error without desc", func(qmp.Command) (any, error) {
			return map[string]any{"error": map[string]any{"class": "CommandNotFound"}}, nil
		}, "migrate-set-parameters: CommandNotFound"},
		{"neither return nor error", func(qmp.Command) (any, error) {
			return map[string]any{"id": "1"}, nil
		}, `migrate-set-parameters: reply "{\"id\":\"1\"}" has neither return nor error: garbled QMP reply`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mon, _ := clientFake(tt.reply)
			err := SetParameters(mon, Params{Mode: "predictive"})
			if err == nil || err.Error() != tt.want {
				t.Errorf("error %v, want %s", err, tt.want)
			}
		})
	}

	t.Run("bad return", func(t *testing.T) {
		mon, _ := clientFake(func(qmp.Command) (any, error) {
			return map[string]any{"return": map[string]any{"status": 5}}, nil
		})
		if _, err := Query(mon); err == nil || !strings.HasPrefix(err.Error(), "query-migrate: decode return") {
			t.Errorf("error %v, want a decoding error", err)
		}
	})
}

func TestClientWait(t *testing.T) {
	tests := []struct {
		name     string
		statuses []Info // replies in turn; the last one repeats
		timeout  time.Duration
		want     string // error text; "" for none
		cancel   bool   // whether Wait must send migrate_cancel
	}{
		{"completed", []Info{{Status: StatusSetup}, {Status: StatusActive}, {Status: StatusCompleted, TotalTime: 900}}, time.Minute, "", false},
		// QEMU's status turns completed before its times are computed.
		{"completed before its times", []Info{{Status: StatusActive}, {Status: StatusCompleted}, {Status: StatusCompleted},
			{Status: StatusCompleted, TotalTime: 900, Downtime: 40}}, time.Minute, "", false},
		{"failed", []Info{{Status: StatusActive}, {Status: StatusFailed, ErrorDesc: "Unable to write to socket: Connection reset by peer"}},
			time.Minute, "migration failed: Unable to write to socket: Connection reset by peer", false},
		{"cancelled", []Info{{Status: StatusCancelled}}, time.Minute, "migration cancelled", false},
		{"deadline", []Info{{Status: StatusActive}}, 30 * time.Millisecond,
			"wait for migration: context deadline exceeded; migrate_cancel sent", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			replies := tt.statuses
			cancelled := false
			mon, sent := clientFake(func(cmd qmp.Command) (any, error) {
				if cmd.Execute == "migrate_cancel" {
					cancelled = true
				}
				if cmd.Execute != "query-migrate" {
					return clientOK(cmd)
				}
				if cancelled {
					return map[string]any{"return": Info{Status: StatusCancelled}}, nil
				}
				info := replies[0]
				if len(replies) > 1 {
					replies = replies[1:]
				}
				return map[string]any{"return": info}, nil
			})
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			var seen []string
			info, err := Wait(ctx, mon, 5*time.Millisecond, func(i Info) { seen = append(seen, i.Status) })
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || err.Error() != tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
			if tt.cancel && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v is not the context's", err)
			}
			last := tt.statuses[len(tt.statuses)-1]
			if tt.cancel {
				last = Info{Status: StatusCancelled} // what Wait waits for after its cancel
			}
			if info.Status != last.Status || info.TotalTime != last.TotalTime {
				t.Errorf("returned %+v, want %+v", info, last)
			}
			if !tt.cancel && len(seen) != len(tt.statuses) {
				t.Errorf("progress saw %q, want one call per reply", seen)
			}
			if got := slices.Contains(*sent, `{"execute":"migrate_cancel"}`); got != tt.cancel {
				t.Errorf("migrate_cancel sent: %v, want %v (commands %q)", got, tt.cancel, *sent)
			}
		})
	}

	t.Run("completed without times", func(t *testing.T) {
		n := 0
		mon, _ := clientFake(func(qmp.Command) (any, error) {
			n++
			return map[string]any{"return": Info{Status: StatusCompleted}}, nil
		})
		info, err := Wait(context.Background(), mon, time.Millisecond, nil)
		if err != nil || info.Status != StatusCompleted || n != completedSettles+1 {
			t.Errorf("returned %+v, %v after %d queries, want completed after %d", info, err, n, completedSettles+1)
		}
	})

	t.Run("query error", func(t *testing.T) {
		mon, _ := clientFake(func(qmp.Command) (any, error) { return nil, errors.New("use of closed network connection") })
		_, err := Wait(context.Background(), mon, time.Millisecond, nil)
		if err == nil || err.Error() != "wait for migration: query-migrate: use of closed network connection" {
			t.Errorf("error %v", err)
		}
	})
}

// QEMU, the reference: the client drives a real QEMU-to-QEMU migration of
// the pagecast guest. The tests run one after the other: each boots up to
// two QEMUs, whose firmware is slow under KVM's instruction emulation, and
// five booting at once on a busy two-CPU machine missed a minute's deadline.

const (
	clientQEMUMemory   = 64 << 20
	clientQEMUWorkload = "hotset"
)

// clientStartQEMU starts QEMU running workload; with incoming set it is a
// migration destination instead and is returned at once. A source is
// returned once its guest makes progress. extra are more QEMU options.
func clientStartQEMU(t *testing.T, workload, incoming string, extra ...string) *qemu.VM {
	t.Helper()
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	testutil.RequiresQEMUWithKVM(t)
	w, err := guest.ParseWorkload(workload)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := qemu.Start(qemu.Options{MemoryBytes: clientQEMUMemory, Cmdline: w.Cmdline(1), Seed: 1, Incoming: incoming, Extra: extra, Accel: qemu.AccelKVM})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	if incoming != "" {
		return vm
	}
	if _, err := vm.WaitBanner(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for clientProgress(t, vm) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("guest made no progress in 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return vm
}

func clientGuestStatus(t *testing.T, vm *qemu.VM) guest.Status {
	t.Helper()
	s, err := vm.GuestStatus()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func clientProgress(t *testing.T, vm *qemu.VM) uint64 {
	t.Helper()
	return clientGuestStatus(t, vm).TotalProgress()
}

// clientFreeAddr is a loopback address where nothing listens (for a while).
func clientFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// clientConnect connects to a QMP socket as `pagecast migrate` would.
func clientConnect(t *testing.T, path string) *qmp.SocketMonitor {
	t.Helper()
	mon, err := qmp.NewSocketMonitor("unix", path, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Disconnect() })
	return mon
}

// clientRunState is query-status's "status": running, paused, inmigrate,
// postmigrate…
func clientRunState(t *testing.T, mon qmp.Monitor) string {
	t.Helper()
	var st struct {
		Status string `json:"status"`
	}
	if err := clientRun(mon, "query-status", nil, &st); err != nil {
		t.Fatal(err)
	}
	return st.Status
}

// clientLogRounds logs a reply each time a round ends (dirty-sync-count
// grows) and at the end.
func clientLogRounds(t *testing.T) func(Info) {
	var syncs uint64
	return func(i Info) {
		if i.RAM == nil {
			return
		}
		if i.RAM.DirtySyncCount != syncs || i.Status != StatusActive {
			syncs = i.RAM.DirtySyncCount
			t.Logf("%-9s %6d ms  sync %3d  transferred %5.1f MiB  remaining %5.1f MiB  dirty %6d pages/s  expected downtime %d ms",
				i.Status, i.TotalTime, i.RAM.DirtySyncCount, float64(i.RAM.Transferred)/(1<<20),
				float64(i.RAM.Remaining)/(1<<20), i.RAM.DirtyPagesRate, i.ExpectedDowntime)
		}
	}
}

func TestQEMUMigration(t *testing.T) {
	src := clientStartQEMU(t, clientQEMUWorkload, "")
	addr := clientFreeAddr(t)
	dst := clientStartQEMU(t, clientQEMUWorkload, "tcp:"+addr, "-S")
	mon := clientConnect(t, src.QMPPath)

	if err := SetParameters(mon, Params{MaxBandwidth: 64 << 20, DowntimeLimit: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(mon, "tcp:"+addr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	info, err := Wait(ctx, mon, 100*time.Millisecond, clientLogRounds(t))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := mon.Run([]byte(`{"execute":"query-migrate"}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("query-migrate: %s", raw)
	t.Logf("%s: total-time %d ms, downtime %d ms, setup-time %d ms, transferred %d bytes, dirty-sync-count %d",
		clientQEMUWorkload, info.TotalTime, info.Downtime, info.SetupTime, info.RAM.Transferred, info.RAM.DirtySyncCount)

	if info.Status != StatusCompleted || info.RAM == nil || info.RAM.Transferred == 0 ||
		info.TotalTime <= 0 || info.Downtime <= 0 || info.RAM.DirtySyncCount < 1 {
		t.Errorf("completed migration reported as %+v (ram %+v)", info, info.RAM)
	}

	// The destination holds the machine as the source stopped it: -S keeps
	// it paused once the migration is in, so that its memory can be
	// compared with the stopped source's byte for byte before it runs on.
	clientWaitRunState(t, dst.Monitor, "paused")
	if state := clientRunState(t, mon); state != "postmigrate" {
		t.Errorf("source is %q, want postmigrate", state)
	}
	if len(dst.Memory()) != len(src.Memory()) {
		t.Fatalf("destination has %d bytes of memory, the source %d", len(dst.Memory()), len(src.Memory()))
	}
	// Only the guest's own memory, from its image up, must match: below it
	// lies the firmware's, where SeaBIOS set up a kvmclock page that the
	// destination's KVM rewrites after the load (a new version, the stable
	// flag cleared), outside the migration stream.
	for _, page := range clientDiffPages(src.Memory(), dst.Memory()) {
		if page < guest.ImageAddr/guest.PageSize {
			t.Logf("firmware page %#x differs on the destination", page*guest.PageSize)
			continue
		}
		t.Errorf("guest page %#x differs on the destination", page*guest.PageSize)
	}
	was := clientGuestStatus(t, src)
	if err := clientRun(dst.Monitor, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	clientWaitRunState(t, dst.Monitor, "running")
	now := clientGuestStatus(t, dst)
	time.Sleep(500 * time.Millisecond)
	later := clientProgress(t, dst)
	t.Logf("guest progress: source stopped at %d, destination %d on cont, %d 500 ms later", was.TotalProgress(), now.TotalProgress(), later)
	if now.Workload != was.Workload || now.CPUs != was.CPUs || now.TotalProgress() < was.TotalProgress() {
		t.Errorf("destination guest %v, want it to carry on from the source's %v", now, was)
	}
	if later <= now.TotalProgress() {
		t.Errorf("destination guest progress stuck at %d", later)
	}
}

// clientWaitRunState waits up to 10s for query-status to say want.
func clientWaitRunState(t *testing.T, mon qmp.Monitor, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for state := clientRunState(t, mon); state != want; state = clientRunState(t, mon) {
		if time.Now().After(deadline) {
			t.Fatalf("virtual machine is %q, want %s", state, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clientDiffPages lists the page numbers where a and b, two memories of
// the same size, differ.
func clientDiffPages(a, b []byte) []int {
	var pages []int
	for off := 0; off+guest.PageSize <= len(a); off += guest.PageSize {
		if !bytes.Equal(a[off:off+guest.PageSize], b[off:off+guest.PageSize]) {
			pages = append(pages, off/guest.PageSize)
		}
	}
	return pages
}

func TestQEMUMigrationFailure(t *testing.T) {
	src := clientStartQEMU(t, clientQEMUWorkload, "")
	mon := clientConnect(t, src.QMPPath)

	if err := Migrate(mon, "tcp:"+clientFreeAddr(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := Wait(ctx, mon, 100*time.Millisecond, nil)
	t.Logf("%+v: %v", info, err)
	if err == nil || info.Status != StatusFailed || info.ErrorDesc == "" || !strings.Contains(err.Error(), info.ErrorDesc) {
		t.Fatalf("Wait returned %+v, %v; want a failure carrying QEMU's error-desc", info, err)
	}
	if state := clientRunState(t, mon); state != "running" {
		t.Errorf("source is %q after the failed migration, want running", state)
	}
	before := clientProgress(t, src)
	time.Sleep(200 * time.Millisecond)
	if after := clientProgress(t, src); after <= before {
		t.Errorf("source guest progress stuck at %d", after)
	}
}

// TestQEMUMigrationCancel ends Wait's context while QEMU is still sending:
// Wait must cancel, and the source must keep running.
func TestQEMUMigrationCancel(t *testing.T) {
	src := clientStartQEMU(t, clientQEMUWorkload, "")
	addr := clientFreeAddr(t)
	clientStartQEMU(t, clientQEMUWorkload, "tcp:"+addr)
	mon := clientConnect(t, src.QMPPath)

	// 64 MiB at 8 MiB/s takes 8s: the migration is still going at 1s.
	if err := SetParameters(mon, Params{MaxBandwidth: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(mon, "tcp:"+addr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := Wait(ctx, mon, 100*time.Millisecond, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait returned %+v, %v; want the context's deadline", info, err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err = Wait(ctx, mon, 50*time.Millisecond, nil)
	if info.Status != StatusCancelled || err == nil {
		t.Errorf("after migrate_cancel: %+v, %v; want cancelled", info, err)
	}
	if state := clientRunState(t, mon); state != "running" {
		t.Errorf("source is %q after the cancelled migration, want running", state)
	}
}

// TestClientQueryRetriesGarbledReply: a reply overwritten by an event line
// (digitalocean/go-qemu#226) is asked for again, once.
func TestClientQueryRetriesGarbledReply(t *testing.T) {
	calls := 0
	mon, _ := clientFake(func(qmp.Command) (any, error) {
		calls++
		if calls == 1 {
			return map[string]any{"event": "STOP", "timestamp": map[string]any{"seconds": 1, "microseconds": 2}}, nil
		}
		return map[string]any{"return": map[string]any{"status": "device"}}, nil
	})
	info, err := Query(mon)
	if err != nil || info.Status != StatusDevice || calls != 2 {
		t.Fatalf("Query: %+v, %v after %d calls", info, err, calls)
	}
}

// TestWaitInterrupted: a wait whose context is cancelled (a signal, in
// pagecast migrate) cancels the migration and says it was interrupted,
// not "context canceled".
func TestWaitInterrupted(t *testing.T) {
	status := StatusActive
	mon, sent := clientFake(func(cmd qmp.Command) (any, error) {
		if cmd.Execute == "migrate_cancel" {
			status = StatusCancelled
		}
		if cmd.Execute != "query-migrate" {
			return clientOK(cmd)
		}
		return map[string]any{"return": Info{Status: status}}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	_, err := Wait(ctx, mon, 5*time.Millisecond, nil)
	if err == nil || err.Error() != "migration interrupted; migrate_cancel sent" || !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want the interruption, wrapping context.Canceled", err)
	}
	if !slices.Contains(*sent, `{"execute":"migrate_cancel"}`) {
		t.Errorf("migrate_cancel not sent: %q", *sent)
	}
}

// TestWaitSettlesCancel: an interrupted wait follows the migration after
// its migrate_cancel until it has ended, and says how it ended: cancelled
// after QEMU's cancelling, completed where the cancel came after the last
// byte (the guest is on the destination: no error), or not ended in time.
func TestWaitSettlesCancel(t *testing.T) {
	settle := cancelSettle
	cancelSettle = 200 * time.Millisecond
	defer func() { cancelSettle = settle }()
	for _, tc := range []struct {
		name  string
		after []string // statuses after migrate_cancel, the last repeated
		want  string   // the status returned
		err   string   // the error's text, "" for none
	}{
		{"cancelled", []string{StatusCancelling, StatusCancelling, StatusCancelled}, StatusCancelled,
			"migration interrupted; migrate_cancel sent"},
		{"completed all the same", []string{StatusDevice, StatusCompleted}, StatusCompleted, ""},
		{"never ends", []string{StatusCancelling}, StatusCancelling,
			"wait for migration: context canceled; migrate_cancel sent 200ms ago, and the migration is still cancelling"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			after := -1 // replies since migrate_cancel; -1 before it
			mon, _ := clientFake(func(cmd qmp.Command) (any, error) {
				if cmd.Execute == "migrate_cancel" {
					after = 0
				}
				if cmd.Execute != "query-migrate" {
					return clientOK(cmd)
				}
				if after < 0 {
					cancel()
					return map[string]any{"return": Info{Status: StatusActive}}, nil
				}
				st := tc.after[min(after, len(tc.after)-1)]
				after++
				return map[string]any{"return": Info{Status: st, TotalTime: 900}}, nil
			})
			info, err := Wait(ctx, mon, 5*time.Millisecond, nil)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || err.Error() != tc.err) {
				t.Errorf("error %v, want %q", err, tc.err)
			}
			if info.Status != tc.want {
				t.Errorf("status %q, want %q", info.Status, tc.want)
			}
		})
	}
}

// TestWaitInterruptedInPostcopy: once the guest runs on the destination a
// cancel would lose it: an interrupted wait sends none and says the
// migration goes on, including where post-copy began after the last poll.
func TestWaitInterruptedInPostcopy(t *testing.T) {
	for _, tc := range []struct {
		name  string
		polls []string // statuses in turn, the last repeated
	}{
		{"postcopy-active", []string{StatusActive, StatusPostcopy}},
		{"postcopy-paused", []string{StatusPostcopyPaused}},
		{"began since the last poll", []string{StatusActive, StatusActive, StatusPostcopy}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			n := 0
			mon, sent := clientFake(func(cmd qmp.Command) (any, error) {
				if cmd.Execute != "query-migrate" {
					return clientOK(cmd)
				}
				st := tc.polls[min(n, len(tc.polls)-1)]
				n++
				if n == len(tc.polls)-1 || len(tc.polls) == 1 {
					cancel() // the next wait for a tick sees it
				}
				return map[string]any{"return": Info{Status: st}}, nil
			})
			_, err := Wait(ctx, mon, 5*time.Millisecond, nil)
			var d *Detached
			if !errors.As(err, &d) || !strings.Contains(err.Error(), "the migration goes on") {
				t.Fatalf("error %v, want *Detached", err)
			}
			if slices.Contains(*sent, `{"execute":"migrate_cancel"}`) {
				t.Errorf("migrate_cancel sent in post-copy: %q", *sent)
			}
		})
	}
}

// TestCancelRefusedInPostcopy: pagecast's engine refuses migrate_cancel
// once post-copy has begun, as QEMU should: the guest would be lost.
func TestCancelRefusedInPostcopy(t *testing.T) {
	for _, st := range []string{StatusActive, StatusPostcopy, StatusPostcopyPaused} {
		called := false
		m := &Migration{cancel: func() { called = true }}
		m.info.Status = st
		err := m.Cancel()
		if post := InPostcopy(st); post != errors.Is(err, ErrPostcopyUncancellable) || post == called || post == m.cancelled {
			t.Errorf("%s: Cancel() = %v, cancelled %v", st, err, called)
		}
	}
}

// silentMonitor answers query-migrate once (active), then never, as a
// QEMU stopped with SIGSTOP does: its socket open, no reply.
type silentMonitor struct{ n int }

func (m *silentMonitor) Connect() error    { return nil }
func (m *silentMonitor) Disconnect() error { return nil }
func (m *silentMonitor) Events(context.Context) (<-chan qmp.Event, error) {
	return nil, nil
}
func (m *silentMonitor) Run([]byte) ([]byte, error) {
	m.n++
	if m.n == 1 {
		return []byte(`{"return":{"status":"active","ram":{"transferred":4096}}}`), nil
	}
	select {}
}

// TestWaitNoStatus: replies without a status (QEMU's for no migration)
// after the migrate command end the wait, saying so, rather than holding
// it for good (walk 122); one between two with a status does not.
func TestWaitNoStatus(t *testing.T) {
	defer func(d time.Duration) { noStatus = d }(noStatus)
	noStatus = 100 * time.Millisecond
	mon, _ := clientFake(func(cmd qmp.Command) (any, error) {
		return map[string]any{"return": map[string]any{}}, nil
	})
	done := make(chan error, 1)
	go func() { _, err := Wait(context.Background(), mon, 5*time.Millisecond, nil); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "QEMU has reported no migration") {
			t.Errorf("Wait: %v, want no migration said", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait still polling a QEMU that reports no migration 10 s on")
	}
	noStatus = 500 * time.Millisecond
	polls := 0
	mon, _ = clientFake(func(cmd qmp.Command) (any, error) {
		polls++
		switch {
		case polls%3 == 0:
			return map[string]any{"return": map[string]any{"status": "active"}}, nil
		case polls > 200: // a second at least, longer than noStatus
			return map[string]any{"return": map[string]any{"status": "completed", "total-time": 100}}, nil
		}
		return map[string]any{"return": map[string]any{}}, nil
	})
	if info, err := Wait(context.Background(), mon, 5*time.Millisecond, nil); err != nil || info.Status != StatusCompleted {
		t.Errorf("Wait with a status every 3 replies: %+v, %v", info, err)
	}
}

// TestWaitSilentMonitor: a query-migrate that is never answered does not
// hold Wait past its context: it ends saying the monitor is silent and no
// cancel was sent. (It waited for good, and pagecast migrate with it,
// SIGINT and SIGTERM doing nothing; found by a review walk.)
func TestWaitSilentMonitor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := Wait(ctx, &silentMonitor{}, 50*time.Millisecond, nil); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrMonitorSilent) || !strings.Contains(err.Error(), "no migrate_cancel was sent") {
			t.Errorf("Wait: %v, want the monitor silent and no cancel sent", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Wait still blocked 10 s after its context ended")
	}
}

// blockedMonitor never answers; its peer is process pid.
type blockedMonitor struct{ pid int }

func (b blockedMonitor) Run([]byte) ([]byte, error) { select {} }
func (b blockedMonitor) PeerPID() int               { return b.pid }
func (b blockedMonitor) Connect() error             { return nil }
func (b blockedMonitor) Disconnect() error          { return nil }
func (b blockedMonitor) Events(context.Context) (<-chan qmp.Event, error) {
	return nil, nil
}

// TestQuerySaysStopped: a query-migrate unanswered because QEMU is stopped
// with SIGSTOP says so, with its pid (walk 110: "stopped or stuck"), and
// names a pagecast vm run as such (walk 149: it was called QEMU).
func TestQuerySaysStopped(t *testing.T) {
	t.Run("QEMU", func(t *testing.T) { querySaysStopped(t, "sleep", "QEMU") })
	t.Run("pagecast", func(t *testing.T) {
		sleep, err := exec.LookPath("sleep")
		if err != nil {
			t.Skip("no sleep to stop:", err)
		}
		b, err := os.ReadFile(sleep)
		if err != nil {
			t.Fatal(err)
		}
		named := filepath.Join(t.TempDir(), "pagecast") // a process whose command is pagecast's
		if err := os.WriteFile(named, b, 0o755); err != nil {
			t.Fatal(err)
		}
		querySaysStopped(t, named, "pagecast vm run")
	})
}

func querySaysStopped(t *testing.T, command, vm string) {
	cmd := exec.Command(command, "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep to stop:", err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !proc.Stopped(pid) && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	}
	defer func(p time.Duration) { monitorPatience = p }(monitorPatience)
	monitorPatience = 50 * time.Millisecond
	var logged bytes.Buffer
	defer func(l *slog.Logger) { slog.SetDefault(l) }(slog.Default())
	slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := queryCtx(ctx, blockedMonitor{pid}); !errors.Is(err, ErrMonitorSilent) {
		t.Errorf("queryCtx: %v", err)
	}
	if want := fmt.Sprintf("%s's monitor has not answered query-migrate for 50ms: %s, pid %d, is stopped (SIGSTOP: SIGCONT resumes it)", vm, vm, pid); !strings.Contains(logged.String(), want) {
		t.Errorf("logged %q, want %q", logged.String(), want)
	}
}
