package migrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// qemuFake answers as QEMU 7.2 does to what SetupQEMU and WaitQEMU send:
// 64 MiB of RAM, and {} for the rest. It refuses any x-pagecast member.
func qemuFake(t *testing.T) (qmp.Monitor, *[]string) {
	t.Helper()
	return clientFake(func(cmd qmp.Command) (any, error) {
		switch cmd.Execute {
		case "query-version":
			return map[string]any{"return": map[string]any{"package": "Debian 1:7.2+dfsg-7+deb12u18+b3",
				"qemu": map[string]any{"major": 7, "minor": 2, "micro": 22}}}, nil
		case "query-memory-size-summary":
			return map[string]any{"return": map[string]any{"base-memory": 64 << 20, "plugged-memory": 0}}, nil
		case "query-cpus-fast":
			return map[string]any{"return": []any{map[string]any{"cpu-index": 0}, map[string]any{"cpu-index": 1}}}, nil
		case "query-kvm":
			return map[string]any{"return": map[string]any{"enabled": true, "present": true}}, nil
		case "query-migrate-capabilities":
			return map[string]any{"return": []any{map[string]any{"capability": "xbzrle", "state": false},
				map[string]any{"capability": "auto-converge", "state": true}, map[string]any{"capability": "events", "state": true}}}, nil
		case "query-migrate-parameters":
			return map[string]any{"return": map[string]any{"downtime-limit": 300, "max-bandwidth": 134217728, "max-postcopy-bandwidth": 0,
				"xbzrle-cache-size": 67108864, "cpu-throttle-initial": 20, "cpu-throttle-increment": 10, "cpu-throttle-tailslow": false}}, nil
		}
		return clientOK(cmd)
	})
}

// TestTCGLosesWrites: a plan for a source QEMU before 9.0 whose guest runs
// under TCG says that QEMU's own migration loses some of its writes (a
// QEMU bug: measured, a Linux guest's kernel crashed on the destination),
// and only then.
func TestTCGLosesWrites(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kvm   any // query-kvm's return, or an error
		major int
		want  bool
	}{
		{"tcg 7.2", map[string]any{"enabled": false, "present": false}, 7, true},
		{"tcg 8.2", map[string]any{"enabled": false, "present": false}, 8, true},
		{"tcg 9.0", map[string]any{"enabled": false, "present": false}, 9, false},
		{"kvm 7.2", map[string]any{"enabled": true, "present": true}, 7, false},
		{"not asked", errors.New("CommandNotFound"), 7, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mon, _ := clientFake(func(cmd qmp.Command) (any, error) {
				switch cmd.Execute {
				case "query-kvm":
					if err, ok := tc.kvm.(error); ok {
						return map[string]any{"error": map[string]any{"class": "CommandNotFound", "desc": err.Error()}}, nil
					}
					return map[string]any{"return": tc.kvm}, nil
				case "query-version":
					return map[string]any{"return": map[string]any{"qemu": map[string]any{"major": tc.major, "minor": 2, "micro": 0}}}, nil
				case "query-memory-size-summary":
					return map[string]any{"return": map[string]any{"base-memory": 64 << 20}}, nil
				}
				return clientOK(cmd)
			})
			plan, err := SetupQEMU(mon, nil, Params{Mode: ModePrecopy})
			if err != nil {
				t.Fatal(err)
			}
			said := slices.ContainsFunc(plan.Notes, func(n string) bool {
				return strings.Contains(n, fmt.Sprintf("QEMU %d.2.0's own migration of a guest under TCG loses some of its writes", tc.major))
			})
			if said != tc.want {
				t.Errorf("notes %q: the QEMU bug said %v, want %v", plan.Notes, said, tc.want)
			}
		})
	}
}

func TestMonitorKind(t *testing.T) {
	for _, tt := range []struct{ pkg, want string }{
		{"pagecast 0.1", MonitorPagecast},
		{"Debian 1:7.2+dfsg-7+deb12u18+b3", MonitorQEMU},
		{"", MonitorQEMU},
	} {
		mon, sent := clientFake(func(qmp.Command) (any, error) {
			return map[string]any{"return": map[string]any{"package": tt.pkg}}, nil
		})
		kind, err := MonitorKind(mon)
		if err != nil || kind != tt.want {
			t.Errorf("package %q: %q, %v; want %q", tt.pkg, kind, err, tt.want)
		}
		if want := []string{`{"execute":"query-version"}`}; !slices.Equal(*sent, want) {
			t.Errorf("sent %q, want %q", *sent, want)
		}
	}
}

// TestSetupQEMU checks the exact commands each mode sends to QEMU: the
// destination's (if any) first, then the source's.
func TestSetupQEMU(t *testing.T) {
	const (
		summary = `{"execute":"query-memory-size-summary"}`
		// Every plan sets every capability it manages, on or off.
		plainCaps = `{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"xbzrle","state":false},{"capability":"auto-converge","state":false},{"capability":"postcopy-ram","state":false}]}}`
		destOff   = `{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"postcopy-ram","state":false},{"capability":"postcopy-blocktime","state":false}]}}`
		destOn    = `{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"postcopy-ram","state":true},{"capability":"postcopy-blocktime","state":true}]}}`
		cpus      = `{"execute":"query-cpus-fast"}`
		kvm       = `{"execute":"query-kvm"}`                  // under KVM: QEMU's migration keeps every write (see TestTCGLosesWrites)
		qcaps     = `{"execute":"query-migrate-capabilities"}` // what WaitQEMU sets back at the end
		qparams   = `{"execute":"query-migrate-parameters"}`
		downtime  = `{"execute":"migrate-set-parameters","arguments":{"downtime-limit":300,"max-bandwidth":0,"max-postcopy-bandwidth":0}}`
	)
	tests := []struct {
		name     string
		p        Params
		withDest bool
		src, dst []string
		caps     []string
		notes    int
	}{
		{"precopy", Params{Mode: ModePrecopy, DowntimeLimit: 300 * time.Millisecond}, false,
			[]string{summary, cpus, kvm, qcaps, qparams, plainCaps, downtime}, nil, nil, 0},
		{"default mode, bandwidth", Params{MaxBandwidth: 32 << 20}, false,
			[]string{summary, cpus, kvm, qcaps, qparams, plainCaps, `{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":33554432,"max-postcopy-bandwidth":0}}`}, nil, nil, 0},
		{"precopy, max rounds given", Params{Mode: ModePrecopy, MaxRounds: 10}, false,
			[]string{summary, cpus, kvm, qcaps, qparams, plainCaps, `{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":0,"max-postcopy-bandwidth":0}}`}, nil, nil, 0},
		{"precopy with the destination", Params{Mode: ModePrecopy}, true,
			[]string{summary, cpus, kvm, qcaps, qparams, plainCaps, `{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":0,"max-postcopy-bandwidth":0}}`}, []string{summary, qcaps, destOff}, nil, 0},
		{"mecom", Params{Mode: MECOM, DowntimeLimit: 300 * time.Millisecond}, false,
			[]string{summary, cpus, kvm, qcaps, qparams,
				`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"xbzrle","state":true},{"capability":"auto-converge","state":false},{"capability":"postcopy-ram","state":false}]}}`,
				`{"execute":"migrate-set-parameters","arguments":{"downtime-limit":300,"max-bandwidth":0,"max-postcopy-bandwidth":0,"xbzrle-cache-size":67108864}}`},
			nil, []string{CapXBZRLE}, 0},
		{"precopy+mecom", Params{Mode: ModePrecopy + "+" + MECOM}, false,
			[]string{summary, cpus, kvm, qcaps, qparams,
				`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"xbzrle","state":true},{"capability":"auto-converge","state":false},{"capability":"postcopy-ram","state":false}]}}`,
				`{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":0,"max-postcopy-bandwidth":0,"xbzrle-cache-size":67108864}}`},
			nil, []string{CapXBZRLE}, 0},
		{"throttle", Params{Mode: ModeThrottle, DowntimeLimit: 300 * time.Millisecond}, false,
			[]string{summary, cpus, kvm, qcaps, qparams,
				`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"xbzrle","state":false},{"capability":"auto-converge","state":true},{"capability":"postcopy-ram","state":false}]}}`,
				`{"execute":"migrate-set-parameters","arguments":{"cpu-throttle-increment":50,"cpu-throttle-initial":50,"cpu-throttle-tailslow":false,"downtime-limit":300,"max-bandwidth":0,"max-postcopy-bandwidth":0}}`},
			nil, []string{CapAutoConverge}, 0},
		{"tsmc", Params{Mode: ModeTSMC, DowntimeLimit: 300 * time.Millisecond, MaxRounds: 30, Profile: "x.trace"}, true,
			[]string{summary, cpus, kvm, qcaps, qparams,
				`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"xbzrle","state":false},{"capability":"auto-converge","state":false},{"capability":"postcopy-ram","state":true}]}}`,
				downtime},
			[]string{summary, qcaps, destOn}, []string{CapPostcopyRAM}, 1},
		{"tsmc, bandwidth", Params{Mode: ModeTSMC, MaxBandwidth: 32 << 20}, true,
			[]string{summary, cpus, kvm, qcaps, qparams,
				`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"xbzrle","state":false},{"capability":"auto-converge","state":false},{"capability":"postcopy-ram","state":true}]}}`,
				`{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":33554432,"max-postcopy-bandwidth":33554432}}`},
			[]string{summary, qcaps, destOn}, []string{CapPostcopyRAM}, 0},
		{"precopy+postcopy, bandwidth", Params{Mode: ModePrecopy + "+" + Postcopy, MaxBandwidth: 32 << 20}, true,
			[]string{summary, cpus, kvm, qcaps, qparams,
				`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"xbzrle","state":false},{"capability":"auto-converge","state":false},{"capability":"postcopy-ram","state":true}]}}`,
				`{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":33554432,"max-postcopy-bandwidth":33554432}}`},
			[]string{summary, qcaps, destOn}, []string{CapPostcopyRAM}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, srcSent := qemuFake(t)
			var dst qmp.Monitor
			var dstSent *[]string
			if tt.withDest {
				dst, dstSent = qemuFake(t)
			}
			plan, err := SetupQEMU(src, dst, tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(*srcSent, tt.src) {
				t.Errorf("source got\n%s\nwant\n%s", strings.Join(*srcSent, "\n"), strings.Join(tt.src, "\n"))
			}
			if dstSent != nil && !slices.Equal(*dstSent, tt.dst) {
				t.Errorf("destination got %q, want %q", *dstSent, tt.dst)
			}
			for _, cmd := range *srcSent {
				if strings.Contains(cmd, "x-pagecast") {
					t.Errorf("QEMU got a pagecast member: %s", cmd)
				}
			}
			if !slices.Equal(plan.Capabilities, tt.caps) || len(plan.Notes) != tt.notes {
				t.Errorf("plan %+v, want capabilities %q and %d notes", plan, tt.caps, tt.notes)
			}
			if plan.Slowdown.VCPUs != 2 {
				t.Errorf("plan's vCPUs %d, want query-cpus-fast's 2", plan.Slowdown.VCPUs)
			}
			if plan.Postcopy != (tt.p.Mode == ModeTSMC || strings.HasSuffix(tt.p.Mode, "+"+Postcopy)) {
				t.Errorf("plan.Postcopy %v for %s", plan.Postcopy, tt.p.Mode)
			}
		})
	}
}

func TestSetupQEMURefuses(t *testing.T) {
	tests := []struct {
		mode     string
		withDest bool
		want     string
	}{
		{ModePredictive, true, `migration mode "predictive": predictive needs pagecast's engine (--engine pagecast, or auto, the default), which runs on a QEMU source whose guest RAM is shared memory and whose dirty pages pagecast tracks, in modes without post-copy`},
		{"predictive+mecom", true, `predictive needs pagecast's engine`},
		{"throttle+mecom", true, `QEMU's compression (xbzrle) combines with its pre-copy only, so throttle+mecom needs pagecast's engine`},
		{"tsmc+mecom", true, `on QEMU, tsmc is QEMU's post-copy, which does not compress`},
		{"mecom+postcopy", true, `+postcopy is QEMU's post-copy, which is not planned with its compression`},
		{"predictive+postcopy", true, `+postcopy is QEMU's own post-copy, which follows QEMU's pre-copy, not predictive's rounds: that is precopy+postcopy`},
		{"teleport", true, `migration mode "teleport": want`},
		{"tsmc+postcopy", true, `+postcopy follows precopy, predictive or mecom`},
		{"precopy+tsmc", true, `+tsmc combines with predictive only`},
		{"mecom+mecom", true, `+mecom twice`},
		{"predictive+postcopy+mecom", true, `each once and in that order`},
		{ModeTSMC, false, "tsmc: " + ErrNeedDestQMP.Error()},
		{"precopy+postcopy", false, "precopy+postcopy: on QEMU this mode uses post-copy"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			src, srcSent := qemuFake(t)
			var dst qmp.Monitor
			dstSent := new([]string)
			if tt.withDest {
				dst, dstSent = qemuFake(t)
			}
			_, err := SetupQEMU(src, dst, Params{Mode: tt.mode})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			// Only the memory size was asked; nothing was changed.
			if len(*srcSent) != 1 || len(*dstSent) != 0 {
				t.Errorf("sent %q to the source and %q to the destination", *srcSent, *dstSent)
			}
		})
	}
	if _, err := SetupQEMU(qemuFakeMust(t), nil, Params{Mode: ModeTSMC}); !errors.Is(err, ErrNeedDestQMP) {
		t.Errorf("tsmc without the destination: %v, want ErrNeedDestQMP", err)
	}
}

// TestSetupQEMUDestSize: a destination QEMU with guest RAM of another size
// is refused before anything is changed, saying so; QEMU's destination
// ended the stream once it came ("Size mismatch"), which the source took
// for a destination not waiting with -incoming (found by a new-user walk).
func TestSetupQEMUDestSize(t *testing.T) {
	src, srcSent := qemuFake(t)
	dst, dstSent := clientFake(func(cmd qmp.Command) (any, error) {
		if cmd.Execute == "query-memory-size-summary" {
			return map[string]any{"return": map[string]any{"base-memory": 32 << 20, "plugged-memory": 0}}, nil
		}
		return clientOK(cmd)
	})
	_, err := SetupQEMU(src, dst, Params{Mode: ModePrecopy})
	if err == nil || !strings.Contains(err.Error(), "the destination QEMU (--dest-qmp) has 32.0 MiB of guest RAM, the source 64.0 MiB") {
		t.Fatalf("a destination of 32 MiB for a source of 64: %v", err)
	}
	if len(*srcSent) != 1 || !slices.Equal(*dstSent, []string{`{"execute":"query-memory-size-summary"}`}) {
		t.Errorf("sent %q to the source and %q to the destination, want only the sizes asked", *srcSent, *dstSent)
	}
}

// TestKVMNotToTCG: a destination QEMU under TCG is refused for a source
// under KVM before anything starts (it refused the state once every page
// had come: walk 69); the other pairs, and a QEMU that does not say, pass.
func TestKVMNotToTCG(t *testing.T) {
	qemuOn := func(kvm *bool) qmp.Monitor {
		m, _ := clientFake(func(cmd qmp.Command) (any, error) {
			if cmd.Execute == "query-kvm" && kvm != nil {
				return map[string]any{"return": map[string]any{"enabled": *kvm, "present": true}}, nil
			}
			if cmd.Execute == "query-kvm" {
				return map[string]any{"error": map[string]any{"class": "CommandNotFound", "desc": "The command query-kvm has not been found"}}, nil
			}
			return clientOK(cmd)
		})
		return m
	}
	yes, no := true, false
	for _, tc := range []struct {
		src, dst *bool
		refused  bool
	}{{&yes, &no, true}, {&no, &yes, false}, {&yes, &yes, false}, {&no, &no, false}, {&yes, nil, false}, {nil, &no, false}} {
		err := KVMNotToTCG(qemuOn(tc.src), qemuOn(tc.dst))
		if (err != nil) != tc.refused || (err != nil && !strings.Contains(err.Error(), "start the destination with --accel kvm")) {
			t.Errorf("source kvm %v, destination kvm %v: %v, want refused %v", tc.src, tc.dst, err, tc.refused)
		}
	}
}

func qemuFakeMust(t *testing.T) qmp.Monitor {
	mon, _ := qemuFake(t)
	return mon
}

func TestXBZRLECacheSize(t *testing.T) {
	for _, tt := range []struct{ ram, want uint64 }{
		{16 << 20, 16 << 20},   // never more than RAM
		{48 << 20, 64 << 20},   // RAM rounded up
		{64 << 20, 64 << 20},   // QEMU's default is the least
		{1 << 30, 256 << 20},   // a quarter
		{3 << 30, 1 << 30},     // rounded up to a power of two
		{64 << 30, 1 << 30},    // at most 1 GiB
		{0, 4096},              // unknown RAM: one page, QEMU's least
		{100 << 20, 64 << 20},  // a quarter is 25 MiB: the default
		{300 << 20, 128 << 20}, // 75 MiB rounded up
	} {
		if got := xbzrleCacheSize(tt.ram); got != tt.want || got&(got-1) != 0 {
			t.Errorf("xbzrleCacheSize(%d MiB) = %d, want %d", tt.ram>>20, got, tt.want)
		}
	}
}

func TestThrottleSteps(t *testing.T) {
	for _, tt := range []struct{ round, initial, increment int }{
		{1, 99, 99}, {2, 99, 99}, {3, 99, 99}, {4, 50, 50}, {6, 33, 33}, {30, 7, 7},
	} {
		initial, increment := throttleSteps(tt.round)
		if initial != tt.initial || increment != tt.increment {
			t.Errorf("throttleSteps(%d) = %d, %d; want %d, %d", tt.round, initial, increment, tt.initial, tt.increment)
		}
	}
}

// repliesInTurn is a QEMU monitor that answers query-migrate with each of
// replies in turn, and every other command with success; it records what
// was sent.
func repliesInTurn(replies []Info) (qmp.Monitor, *[]string) {
	return clientFake(func(cmd qmp.Command) (any, error) {
		if cmd.Execute != "query-migrate" {
			return clientOK(cmd)
		}
		r := replies[0]
		replies = replies[1:]
		return map[string]any{"return": r}, nil
	})
}

// TestWaitQEMUThrottle: the throttle's vCPU time is summed from the
// polls: each level held from the reply that showed it to the next, while
// the migration is active.
func TestWaitQEMUThrottle(t *testing.T) {
	replies := []Info{
		{Status: StatusActive},
		{Status: StatusActive, CPUThrottlePercentage: 50}, // 0 held until here
		{Status: StatusActive, CPUThrottlePercentage: 99}, // 50% of 2 vCPUs for 200 ms: 200
		{Status: StatusDevice},                            // 99% of 2 for 200 ms: 396
		{Status: StatusCompleted, TotalTime: 900},         // paused: nothing
	}
	mon, _ := repliesInTurn(replies)
	at := time.Unix(0, 0)
	defer func(f func() time.Time) { qemuNow = f }(qemuNow)
	qemuNow = func() time.Time { at = at.Add(200 * time.Millisecond); return at }
	plan, err := PlanQEMU(Params{Mode: ModeThrottle}, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	plan.Slowdown.VCPUs = 2
	if _, err := WaitQEMU(context.Background(), mon, &plan, time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	if got := plan.Slowdown.ThrottleTime; got != 596 {
		t.Errorf("throttle time %d ms, want 596", got)
	}
}

// TestQEMUFaultTime: post-copy's waits are the destination's
// postcopy-vcpu-blocktime, summed; absent, not known.
func TestQEMUFaultTime(t *testing.T) {
	for _, tt := range []struct {
		reply map[string]any
		ms    int64
		ok    bool
	}{
		{map[string]any{"status": "completed", "postcopy-blocktime": 40, "postcopy-vcpu-blocktime": []int{120, 35}}, 155, true},
		{map[string]any{"status": "completed"}, 0, false},
	} {
		mon, _ := clientFake(func(cmd qmp.Command) (any, error) {
			return map[string]any{"return": tt.reply}, nil
		})
		ms, ok, err := QEMUFaultTime(mon)
		if err != nil || ms != tt.ms || ok != tt.ok {
			t.Errorf("%v: %d ms, %v, %v; want %d, %v", tt.reply, ms, ok, err, tt.ms, tt.ok)
		}
	}
}

// TestWaitQEMUPostcopy: migrate-start-postcopy goes out once, on the first
// active reply at dirty-sync-count 2.
func TestWaitQEMUPostcopy(t *testing.T) {
	replies := []Info{
		{Status: StatusSetup},
		{Status: StatusActive, RAM: &RAMStats{DirtySyncCount: 1}},
		{Status: StatusActive, RAM: &RAMStats{DirtySyncCount: 2}},
		{Status: StatusActive, RAM: &RAMStats{DirtySyncCount: 2}},
		{Status: StatusPostcopy, RAM: &RAMStats{DirtySyncCount: 3}},
		{Status: StatusCompleted, TotalTime: 900, RAM: &RAMStats{DirtySyncCount: 3, PostcopyRequests: 7}},
	}
	mon, sent := repliesInTurn(replies)
	plan, err := PlanQEMU(Params{Mode: ModeTSMC}, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	info, err := WaitQEMU(context.Background(), mon, &plan, time.Millisecond, nil)
	if err != nil || info.Status != StatusCompleted {
		t.Fatalf("WaitQEMU: %+v, %v", info, err)
	}
	q := `{"execute":"query-migrate"}`
	want := []string{q, q, q, `{"execute":"migrate-start-postcopy"}`, q, q, q}
	if !slices.Equal(*sent, want) {
		t.Errorf("sent %q, want %q", *sent, want)
	}

	t.Run("cancelled on the reply that would start it", func(t *testing.T) {
		// migrate --timeout cancels in progress, on the first reply at
		// dirty-sync-count 2: post-copy must not start (review 87: it
		// did, and the follower stopped in postcopy-active).
		replies := []Info{
			{Status: StatusActive, RAM: &RAMStats{DirtySyncCount: 2}},
			{Status: StatusCancelling, RAM: &RAMStats{DirtySyncCount: 2}},
			{Status: StatusCancelled, RAM: &RAMStats{DirtySyncCount: 2}},
			{Status: StatusCancelled, RAM: &RAMStats{DirtySyncCount: 2}},
		}
		mon, sent := repliesInTurn(replies)
		p, err := PlanQEMU(Params{Mode: ModeTSMC}, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		info, _ := WaitQEMU(ctx, mon, &p, time.Millisecond, func(Info) { cancel() })
		if slices.Contains(*sent, `{"execute":"migrate-start-postcopy"}`) || p.Switched != "" {
			t.Errorf("post-copy started by a cancelled follower: sent %q", *sent)
		}
		if info.Status != StatusCancelled {
			t.Errorf("status %s, want cancelled", info.Status)
		}
	})
	t.Run("postcopy-paused", func(t *testing.T) {
		mon, _ := clientFake(func(cmd qmp.Command) (any, error) {
			return map[string]any{"return": Info{Status: StatusPostcopyPaused}}, nil
		})
		_, err := WaitQEMU(context.Background(), mon, &plan, time.Millisecond, nil)
		if err == nil || !strings.Contains(err.Error(), "migrate-recover") {
			t.Errorf("error %v, want one saying how to recover", err)
		}
	})
	t.Run("post-copy stalled", func(t *testing.T) {
		stall := PostcopyStall
		PostcopyStall = 50 * time.Millisecond
		defer func() { PostcopyStall = stall }()
		n := 0
		mon, _ := clientFake(func(cmd qmp.Command) (any, error) {
			n++
			sent := min(uint64(n), 5) << 20 // moves for five replies, then nothing
			return map[string]any{"return": Info{Status: StatusPostcopy, RAM: &RAMStats{Transferred: sent, Remaining: 8 << 20}}}, nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := WaitQEMU(ctx, mon, &plan, time.Millisecond, nil)
		if err == nil || !strings.Contains(err.Error(), "has moved nothing for") || ctx.Err() != nil {
			t.Errorf("error %v, want one saying post-copy moved nothing", err)
		}
	})
	t.Run("post-copy stalled, the destination there", func(t *testing.T) {
		// A destination stopped (SIGSTOP) for a while, then continued,
		// completes the migration: followed on, not failed.
		stall, giveUp := PostcopyStall, PostcopyGiveUp
		PostcopyStall, PostcopyGiveUp = 20*time.Millisecond, 5*time.Second
		defer func() { PostcopyStall, PostcopyGiveUp = stall, giveUp }()
		start := time.Now()
		mon, _ := clientFake(func(cmd qmp.Command) (any, error) {
			d := time.Since(start)
			switch {
			case d < 10*time.Millisecond:
				return map[string]any{"return": Info{Status: StatusPostcopy, RAM: &RAMStats{Transferred: uint64(d.Microseconds()) + 1, Remaining: 8 << 20}}}, nil
			case d < 150*time.Millisecond: // stopped: nothing moves
				return map[string]any{"return": Info{Status: StatusPostcopy, RAM: &RAMStats{Transferred: 1 << 20, Remaining: 8 << 20}}}, nil
			}
			return map[string]any{"return": Info{Status: StatusCompleted, TotalTime: 900, RAM: &RAMStats{Transferred: 9 << 20}}}, nil
		})
		asked := 0
		p := plan
		p.DestAnswers = func() error { asked++; return ErrNoAnswer }
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err := WaitQEMU(ctx, mon, &p, time.Millisecond, nil)
		if err != nil || info.Status != StatusCompleted || asked == 0 {
			t.Errorf("%s, %v after asking the destination %d times; want completed, the stall followed through", info.Status, err, asked)
		}
	})
	t.Run("post-copy stalled, the destination gone or never back", func(t *testing.T) {
		stall, giveUp := PostcopyStall, PostcopyGiveUp
		PostcopyStall, PostcopyGiveUp = 20*time.Millisecond, 200*time.Millisecond
		defer func() { PostcopyStall, PostcopyGiveUp = stall, giveUp }()
		for _, tc := range []struct {
			answer error
			want   string
		}{
			{errors.New("qmp: connection lost: EOF"), "the destination QEMU is gone (qmp: connection lost: EOF): the guest ran there, and is lost with it"},
			{ErrNoAnswer, "pagecast stops following it: the destination QEMU does not answer (stopped, or overloaded)"},
		} {
			mon, _ := clientFake(func(cmd qmp.Command) (any, error) {
				return map[string]any{"return": Info{Status: StatusPostcopy, RAM: &RAMStats{Transferred: 1 << 20, Remaining: 8 << 20}}}, nil
			})
			p := plan
			p.DestAnswers = func() error { return tc.answer }
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := WaitQEMU(ctx, mon, &p, time.Millisecond, nil)
			cancel()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("destination answering %v: %v, want %q", tc.answer, err, tc.want)
			}
			// Given up on, the migration goes on (Detached: not a
			// failure for the metrics); with the destination gone, the
			// guest is lost, a failure.
			var detached *Detached
			if errors.As(err, &detached) != errors.Is(tc.answer, ErrNoAnswer) {
				t.Errorf("destination answering %v: detached %v", tc.answer, detached)
			}
		}
	})
	t.Run("pre-copy stalled", func(t *testing.T) {
		// QEMU waits for ever on a destination that stopped (SIGSTOP):
		// its progress stayed at 61% with no timeout.
		stall := PrecopyStall
		PrecopyStall = 50 * time.Millisecond
		defer func() { PrecopyStall = stall }()
		n, after := 0, 0 // replies before and after migrate_cancel
		cancelled := false
		mon, sent := clientFake(func(cmd qmp.Command) (any, error) {
			if cmd.Execute == "migrate_cancel" {
				cancelled = true
				return map[string]any{"return": map[string]any{}}, nil
			}
			if cancelled {
				// QEMU says cancelling until its migration thread ends.
				after++
				status := StatusCancelling
				if after == 3 {
					status = StatusCancelled
				}
				return map[string]any{"return": Info{Status: status}}, nil
			}
			n++
			moved := min(uint64(n), 5) << 20 // moves for five replies, then nothing
			return map[string]any{"return": Info{Status: StatusActive, RAM: &RAMStats{Transferred: moved, Remaining: 8 << 20, DirtySyncCount: 1}}}, nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err := WaitQEMU(ctx, mon, &QEMUPlan{Mode: ModePrecopy}, time.Millisecond, nil)
		if err == nil || !strings.Contains(err.Error(), "migration cancelled: QEMU's pre-copy moved nothing for") || ctx.Err() != nil {
			t.Errorf("error %v, want one saying pre-copy moved nothing", err)
		}
		// A failure, not a wish, with what it had sent (review 90: the
		// cancelled reply's empty counts, and status cancelled).
		if !errors.Is(err, ErrStalled) {
			t.Errorf("error %v is not ErrStalled", err)
		}
		if info.Status != StatusCancelled || info.RAM == nil || info.RAM.Transferred != 5<<20 {
			t.Errorf("info %+v (ram %+v): want cancelled, with the 5 MiB sent", info, info.RAM)
		}
		if i := slices.Index(*sent, `{"execute":"migrate_cancel"}`); i < 0 || len(*sent)-i != 4 {
			t.Errorf("commands %q: want migrate_cancel followed by three query-migrate, the last saying cancelled", *sent)
		}
	})
	t.Run("pre-copy plan", func(t *testing.T) {
		mon, sent := clientFake(func(cmd qmp.Command) (any, error) {
			return map[string]any{"return": Info{Status: StatusCompleted, TotalTime: 900, RAM: &RAMStats{DirtySyncCount: 4}}}, nil
		})
		if _, err := WaitQEMU(context.Background(), mon, &QEMUPlan{Mode: ModePrecopy}, time.Millisecond, nil); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(*sent, []string{q}) {
			t.Errorf("sent %q", *sent)
		}
	})
}

// TestWaitQEMUStalled: precopy+postcopy switches to post-copy once a pass
// leaves more than half of what the pass before it left, and not while
// each pass halves it; past MaxSyncs it switches rather than forcing.
func TestWaitQEMUStalled(t *testing.T) {
	q := `{"execute":"query-migrate"}`
	start := `{"execute":"migrate-start-postcopy"}`
	active := func(sync, remaining uint64) Info {
		return Info{Status: StatusActive, RAM: &RAMStats{DirtySyncCount: sync, Remaining: remaining}}
	}
	for _, tc := range []struct {
		name      string
		maxRounds int
		replies   []Info
		want      []string
		switched  string // why it started post-copy
	}{
		{"stalls", 0, []Info{active(1, 1000), active(2, 400), active(2, 300), active(3, 150), active(4, 100),
			{Status: StatusPostcopy}, {Status: StatusCompleted, TotalTime: 900}}, []string{q, q, q, q, q, start, q, q},
			"pre-copy stopped converging: the pass before dirty sync 4 left 100 B, more than half the 150 B the one before it left"},
		{"converges", 0, []Info{active(1, 1000), active(2, 400), active(3, 150), active(4, 50),
			{Status: StatusCompleted, TotalTime: 900}}, []string{q, q, q, q, q}, ""},
		{"round cap", 2, []Info{active(1, 1000), active(2, 400), active(3, 190), active(4, 90),
			{Status: StatusPostcopy}, {Status: StatusCompleted, TotalTime: 900}}, []string{q, q, q, q, start, q, q},
			"round cap: forced after 4 dirty syncs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mon, sent := repliesInTurn(tc.replies)
			plan, err := PlanQEMU(Params{Mode: ModePrecopy + "+" + Postcopy, MaxRounds: tc.maxRounds}, 64<<20)
			if err != nil {
				t.Fatal(err)
			}
			if !plan.Postcopy || !plan.Stalled || !slices.Equal(plan.DestCapabilities, []string{CapPostcopyRAM, CapPostcopyBlocktime}) {
				t.Fatalf("plan %+v", plan)
			}
			if _, err := WaitQEMU(context.Background(), mon, &plan, time.Millisecond, nil); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(*sent, tc.want) || plan.Forced {
				t.Errorf("sent %q (forced %v), want %q", *sent, plan.Forced, tc.want)
			}
			if plan.Switched != tc.switched {
				t.Errorf("switched %q, want %q", plan.Switched, tc.switched)
			}
		})
	}
}

// TestWaitQEMUForced: past MaxSyncs the downtime limit is raised once, and
// the plan says so; a migration that then ends, failed or completed, sets
// the limit back to what it was (the source kept 2000 s for whatever
// migrated it next, its guest or a later cont's).
func TestWaitQEMUForced(t *testing.T) {
	q := `{"execute":"query-migrate"}`
	params := `{"execute":"query-migrate-parameters"}`
	force := `{"execute":"migrate-set-parameters","arguments":{"downtime-limit":2000000}}`
	back := `{"execute":"migrate-set-parameters","arguments":{"downtime-limit":250}}`
	for _, tc := range []struct {
		name string
		end  Info
		want []string
	}{
		{"completes", Info{Status: StatusCompleted, TotalTime: 900, RAM: &RAMStats{DirtySyncCount: 6}},
			[]string{q, q, q, q, params, force, q, q, back}},
		{"fails", Info{Status: StatusFailed, ErrorDesc: "Unable to write to socket: Broken pipe"},
			[]string{q, q, q, q, params, force, q, q, back}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var replies []Info
			for n := 1; n <= 5; n++ {
				replies = append(replies, Info{Status: StatusActive, RAM: &RAMStats{DirtySyncCount: uint64(n)}})
			}
			replies = append(replies, tc.end)
			mon, sent := clientFake(func(cmd qmp.Command) (any, error) {
				switch cmd.Execute {
				case "query-migrate":
					r := replies[0]
					replies = replies[1:]
					return map[string]any{"return": r}, nil
				case "query-migrate-parameters":
					return map[string]any{"return": map[string]any{"downtime-limit": 250, "max-bandwidth": 0}}, nil
				}
				return clientOK(cmd)
			})
			plan, err := PlanQEMU(Params{Mode: ModePrecopy, MaxRounds: 2}, 64<<20)
			if err != nil {
				t.Fatal(err)
			}
			if plan.MaxSyncs != 3 {
				t.Fatalf("MaxSyncs %d for 2 rounds, want 3", plan.MaxSyncs)
			}
			_, err = WaitQEMU(context.Background(), mon, &plan, time.Millisecond, nil)
			if (err != nil) != (tc.end.Status == StatusFailed) {
				t.Fatalf("error %v at %s", err, tc.end.Status)
			}
			if !slices.Equal(*sent, tc.want) || !plan.Forced {
				t.Errorf("sent %q (forced %v), want %q", *sent, plan.Forced, tc.want)
			}
		})
	}
}

// TestSetupQEMUNoBlocktime: a destination QEMU without postcopy-blocktime
// (before 3.0) still takes post-copy, with a note that the guest's waits
// will not be known.
func TestSetupQEMUNoBlocktime(t *testing.T) {
	src, _ := qemuFake(t)
	dst, sent := clientFake(func(cmd qmp.Command) (any, error) {
		if b, _ := json.Marshal(cmd); strings.Contains(string(b), `"postcopy-blocktime"`) {
			return map[string]any{"error": map[string]any{"class": "GenericError", "desc": "Capability 'postcopy-blocktime' not found"}}, nil
		}
		return clientOK(cmd)
	})
	plan, err := SetupQEMU(src, dst, Params{Mode: ModeTSMC})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"execute":"query-memory-size-summary"}`, // clientOK's {}: no size said, nothing compared
		`{"execute":"query-migrate-capabilities"}`,
		`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"postcopy-ram","state":true},{"capability":"postcopy-blocktime","state":true}]}}`,
		`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"postcopy-ram","state":true}]}}`,
	}
	if !slices.Equal(*sent, want) || !slices.Equal(plan.DestCapabilities, []string{CapPostcopyRAM}) ||
		len(plan.Notes) != 1 || !strings.Contains(plan.Notes[0], "refused postcopy-blocktime") {
		t.Errorf("sent %q, plan %+v", *sent, plan)
	}
}

// TestDestCapabilitiesRestored: the post-copy capabilities SetupQEMU sets
// on the destination QEMU are set back to what it had (a tsmc left
// postcopy-ram on in the VM it moved, and the hint after two interrupts
// named the source's settings only; walk 59), among those it has.
func TestDestCapabilitiesRestored(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mode    string
		had     []any // query-migrate-capabilities' return
		restore string
	}{
		{"tsmc", ModeTSMC, []any{map[string]any{"capability": "postcopy-ram", "state": false}, map[string]any{"capability": "postcopy-blocktime", "state": false}},
			`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"postcopy-ram","state":false},{"capability":"postcopy-blocktime","state":false}]}}`},
		{"precopy after an earlier tsmc's", ModePrecopy, []any{map[string]any{"capability": "postcopy-ram", "state": true}, map[string]any{"capability": "postcopy-blocktime", "state": false}},
			`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"postcopy-ram","state":true},{"capability":"postcopy-blocktime","state":false}]}}`},
		{"tsmc, as it had", ModeTSMC, []any{map[string]any{"capability": "postcopy-ram", "state": true}, map[string]any{"capability": "postcopy-blocktime", "state": true}}, ""},
		{"tsmc, no blocktime", ModeTSMC, []any{map[string]any{"capability": "postcopy-ram", "state": false}},
			`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"postcopy-ram","state":false}]}}`},
		{"tsmc, not said", ModeTSMC, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, _ := qemuFake(t)
			dst, sent := clientFake(func(cmd qmp.Command) (any, error) {
				if cmd.Execute == "query-migrate-capabilities" && tc.had != nil {
					return map[string]any{"return": tc.had}, nil
				}
				return clientOK(cmd)
			})
			plan, err := SetupQEMU(src, dst, Params{Mode: tc.mode})
			if err != nil {
				t.Fatal(err)
			}
			before := len(*sent)
			if err := plan.RestoreDest(dst); err != nil {
				t.Fatal(err)
			}
			got := strings.TrimPrefix(strings.Join((*sent)[before:], ""), `{"execute":"query-migrate"}`)
			hint := plan.DestRestoreHint()
			if got != tc.restore || hint != tc.restore {
				t.Errorf("restore sent %q, hint %q; want %q for both", got, hint, tc.restore)
			}
		})
	}
	// A destination receiving a migration is left as it is: a post-copy
	// started after the change lost the guest (review 64).
	src, _ := qemuFake(t)
	dst, sent := clientFake(func(cmd qmp.Command) (any, error) {
		switch cmd.Execute {
		case "query-migrate-capabilities":
			return map[string]any{"return": []any{map[string]any{"capability": "postcopy-ram", "state": false}}}, nil
		case "query-migrate":
			return map[string]any{"return": map[string]any{"status": "active"}}, nil
		}
		return clientOK(cmd)
	})
	plan, err := SetupQEMU(src, dst, Params{Mode: ModeTSMC})
	if err != nil {
		t.Fatal(err)
	}
	// One whose post-copy ends a moment after the source's is waited for.
	asked := 0
	ending, _ := clientFake(func(cmd qmp.Command) (any, error) {
		if cmd.Execute == "query-migrate" {
			if asked++; asked < 3 {
				return map[string]any{"return": map[string]any{"status": "postcopy-active"}}, nil
			}
			return map[string]any{"return": map[string]any{"status": "completed"}}, nil
		}
		return clientOK(cmd)
	})
	if err := plan.RestoreDest(ending); err != nil || asked != 3 {
		t.Errorf("restore on a destination ending its post-copy: %v after %d queries", err, asked)
	}
	before := len(*sent)
	if err := plan.RestoreDest(dst); err == nil || !strings.Contains(err.Error(), "is receiving a migration (active)") ||
		slices.ContainsFunc((*sent)[before:], func(c string) bool { return strings.Contains(c, "migrate-set-capabilities") }) {
		t.Errorf("restore on a destination receiving: %v, sent %q", err, (*sent)[before:])
	}
}

// TestSetupQEMUFailsRestoresDest: a plan the source QEMU refuses leaves
// the destination's post-copy capabilities as they were (review 63).
func TestSetupQEMUFailsRestoresDest(t *testing.T) {
	src, _ := clientFake(func(cmd qmp.Command) (any, error) {
		if cmd.Execute == "migrate-set-parameters" {
			return map[string]any{"error": map[string]any{"class": "GenericError", "desc": "Parameter 'max-bandwidth' expects a size"}}, nil
		}
		return clientOK(cmd)
	})
	dst, sent := clientFake(func(cmd qmp.Command) (any, error) {
		if cmd.Execute == "query-migrate-capabilities" {
			return map[string]any{"return": []any{map[string]any{"capability": "postcopy-ram", "state": false}, map[string]any{"capability": "postcopy-blocktime", "state": false}}}, nil
		}
		return clientOK(cmd)
	})
	if _, err := SetupQEMU(src, dst, Params{Mode: ModeTSMC}); err == nil {
		t.Fatal("a plan the source refused was set up")
	}
	if last := (*sent)[len(*sent)-1]; last != `{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"postcopy-ram","state":false},{"capability":"postcopy-blocktime","state":false}]}}` {
		t.Errorf("the destination's last command: %s, want its post-copy capabilities set back off", last)
	}
}

// TestQEMUSettingsRestored: once QEMU's migration has ended, completed or
// not, the source QEMU has the capabilities and parameters it had before
// the plan changed them (it kept the plan's cap, throttle and capabilities
// for whatever migrated it next; found by a new-user walk).
func TestQEMUSettingsRestored(t *testing.T) {
	for _, end := range []Info{{Status: StatusCompleted, TotalTime: 900}, {Status: StatusFailed, ErrorDesc: "Broken pipe"}, {Status: StatusCancelled}} {
		t.Run(end.Status, func(t *testing.T) {
			replies := []Info{{Status: StatusActive, RAM: &RAMStats{DirtySyncCount: 1}}, end}
			base, _ := qemuFake(t)
			mon, sent := clientFake(func(cmd qmp.Command) (any, error) {
				if cmd.Execute == "query-migrate" {
					r := replies[0]
					replies = replies[1:]
					return map[string]any{"return": r}, nil
				}
				b, _ := json.Marshal(cmd)
				return qmpReply(base, b)
			})
			plan, err := SetupQEMU(mon, nil, Params{Mode: ModeThrottle, MaxBandwidth: 4 << 20, DowntimeLimit: 500 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			*sent = nil
			WaitQEMU(context.Background(), mon, &plan, time.Millisecond, nil)
			want := []string{`{"execute":"query-migrate"}`, `{"execute":"query-migrate"}`,
				`{"execute":"migrate-set-parameters","arguments":{"cpu-throttle-increment":10,"cpu-throttle-initial":20,"cpu-throttle-tailslow":false,"downtime-limit":300,"max-bandwidth":134217728,"max-postcopy-bandwidth":0}}`,
				`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"xbzrle","state":false},{"capability":"auto-converge","state":true},{"capability":"postcopy-ram","state":false}]}}`}
			if !slices.Equal(*sent, want) {
				t.Errorf("after the migration ended %s, sent\n%s\nwant\n%s", end.Status, strings.Join(*sent, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestQEMUSettingsRestoredAfterStall: a pre-copy that WaitQEMU cancels,
// having moved nothing for PrecopyStall, gives the source back its
// settings too, and WaitQEMU returns it cancelled: it returned the active
// reply it cancelled, and the source kept the plan's cap and throttle
// (found by a review walk).
func TestQEMUSettingsRestoredAfterStall(t *testing.T) {
	stall := PrecopyStall
	PrecopyStall = 50 * time.Millisecond
	defer func() { PrecopyStall = stall }()
	base, _ := qemuFake(t)
	n, cancelled := 0, false
	mon, sent := clientFake(func(cmd qmp.Command) (any, error) {
		switch {
		case cmd.Execute == "migrate_cancel":
			cancelled = true
		case cmd.Execute == "query-migrate" && cancelled:
			return map[string]any{"return": Info{Status: StatusCancelled}}, nil
		case cmd.Execute == "query-migrate":
			n++
			return map[string]any{"return": Info{Status: StatusActive, RAM: &RAMStats{Transferred: min(uint64(n), 3) << 20, DirtySyncCount: 1}}}, nil
		}
		b, _ := json.Marshal(cmd)
		return qmpReply(base, b)
	})
	plan, err := SetupQEMU(mon, nil, Params{Mode: ModeThrottle, MaxBandwidth: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	*sent = nil
	info, err := WaitQEMU(context.Background(), mon, &plan, time.Millisecond, nil)
	if err == nil || info.Status != StatusCancelled {
		t.Errorf("a stalled pre-copy: %v, status %q; want an error, and cancelled", err, info.Status)
	}
	if last := (*sent)[len(*sent)-1]; !strings.HasPrefix(last, `{"execute":"migrate-set-capabilities"`) || !strings.Contains(last, `{"capability":"auto-converge","state":true}`) {
		t.Errorf("after the stalled pre-copy was cancelled, the last command was %s: want the source's capabilities set back", last)
	}
}

// qmpReply is mon's answer to the command b, as clientFake's reply
// function gives it.
func qmpReply(mon qmp.Monitor, b []byte) (any, error) {
	raw, err := mon.Run(b)
	if err != nil {
		return nil, err
	}
	var v any
	return v, json.Unmarshal(raw, &v)
}

// TestRestoreHint: a migration pagecast stopped following in post-copy
// keeps its settings on the source QEMU; migrate says what sets them back
// (they stayed for good, unsaid: found by a new-user walk).
func TestRestoreHint(t *testing.T) {
	plan := &QEMUPlan{Parameters: QEMUParams{MaxBandwidth: 4 << 20, MaxPostcopyBandwidth: 4 << 20},
		prior: &qemuSettings{caps: []string{CapXBZRLE}, params: map[string]json.RawMessage{
			"max-bandwidth": json.RawMessage("134217728"), "max-postcopy-bandwidth": json.RawMessage("0"), "downtime-limit": json.RawMessage("300")}}}
	hint := plan.RestoreHint()
	for _, want := range []string{`"max-bandwidth":134217728`, `"max-postcopy-bandwidth":0`, `{"capability":"postcopy-ram","state":false}`, `{"capability":"xbzrle","state":true}`} {
		if !strings.Contains(hint, want) {
			t.Errorf("hint lacks %s: %s", want, hint)
		}
	}
	if strings.Contains(hint, "downtime-limit") {
		t.Errorf("hint sets back a parameter the plan did not set: %s", hint)
	}
	if (&QEMUPlan{}).RestoreHint() != "" {
		t.Error("a hint where what the source had is not known")
	}
}

// TestWaitCarriesCounts: a migration that ends cancelled or failed keeps
// the counts of its last reply that had them: QEMU's reply then holds
// only the status, and a cancelled migration was reported as having sent
// nothing in no time (walks 83 and 89).
func TestWaitCarriesCounts(t *testing.T) {
	moving := Info{Status: StatusActive, TotalTime: 5000, SetupTime: 3, RAM: &RAMStats{Transferred: 100 << 20, Remaining: 20 << 20, Total: 64 << 20}}
	t.Run("cancelled", func(t *testing.T) {
		mon, _ := repliesInTurn([]Info{moving, moving, {Status: StatusCancelled}})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		n := 0
		info, err := Wait(ctx, mon, time.Millisecond, func(Info) {
			if n++; n == 1 {
				cancel()
			}
		})
		if err == nil || info.Status != StatusCancelled || info.RAM == nil || info.RAM.Transferred != 100<<20 || info.TotalTime != 5000 || info.SetupTime != 3 {
			t.Errorf("cancelled: %+v (ram %+v), %v; want the counts of the reply before", info, info.RAM, err)
		}
	})
	t.Run("failed", func(t *testing.T) {
		mon, _ := repliesInTurn([]Info{moving, {Status: StatusFailed, ErrorDesc: "Connection reset by peer"}})
		var seen Info
		info, err := Wait(context.Background(), mon, time.Millisecond, func(i Info) { seen = i })
		if err == nil || info.RAM == nil || info.RAM.Transferred != 100<<20 || info.TotalTime != 5000 {
			t.Errorf("failed: %+v (ram %+v), %v; want the counts of the reply before", info, info.RAM, err)
		}
		if seen.RAM == nil || seen.RAM.Transferred != 100<<20 {
			t.Errorf("progress saw the failed reply without the counts: %+v", seen)
		}
	})
}

// TestAdjust: a cap changed midway (migrate --control) is post-copy's too
// in a post-copy mode, as the plan set it; a downtime limit is refused
// once the switch-over is forced (set, it replaced the forced 2000 s and
// the migration went on for good: review 101), and anything once Restore
// has run (a cap set then outlasted the migration).
func TestAdjust(t *testing.T) {
	mon, sent := clientFake(func(cmd qmp.Command) (any, error) { return clientOK(cmd) })
	bw, dl := uint64(1<<20), 500*time.Millisecond
	for _, tc := range []struct {
		mode string
		want string
	}{
		{ModeTSMC, `{"execute":"migrate-set-parameters","arguments":{"downtime-limit":500,"max-bandwidth":1048576,"max-postcopy-bandwidth":1048576}}`},
		{ModePrecopy, `{"execute":"migrate-set-parameters","arguments":{"downtime-limit":500,"max-bandwidth":1048576}}`},
	} {
		plan, err := PlanQEMU(Params{Mode: tc.mode, MaxBandwidth: 8 << 20, MaxRounds: 2}, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		*sent = nil
		if err := plan.Adjust(mon, &bw, &dl); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(*sent, []string{tc.want}) {
			t.Errorf("%s: sent %q, want %q", tc.mode, *sent, tc.want)
		}
	}
	plan, err := PlanQEMU(Params{Mode: ModePrecopy, MaxBandwidth: 8 << 20, MaxRounds: 2}, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	plan.Forced = true
	*sent = nil
	if err := plan.Adjust(mon, nil, &dl); err == nil || !strings.Contains(err.Error(), "switch-over is forced") {
		t.Errorf("a downtime limit once forced: %v", err)
	}
	if err := plan.Adjust(mon, &bw, nil); err != nil {
		t.Errorf("a cap once forced: %v", err)
	}
	plan.Restore(mon)
	n := len(*sent)
	if err := plan.Adjust(mon, &bw, nil); err == nil || !strings.Contains(err.Error(), "has ended") {
		t.Errorf("a cap after Restore: %v", err)
	}
	if len(*sent) != n {
		t.Errorf("sent after Restore: %q", (*sent)[n:])
	}
}
