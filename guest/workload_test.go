package guest

import (
	"strings"
	"testing"
)

func TestParseWorkload(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		want    Workload
		wantErr string
	}{
		{name: "sweep", spec: "sweep", want: Workload{Name: "sweep"}},
		{name: "idle", spec: "idle", want: Workload{Name: "idle"}},
		{name: "hotset defaults", spec: "hotset",
			want: Workload{Name: "hotset", Seed: 1, Hot: 1024, P: 58982}},
		{name: "hotset params", spec: "hotset:hot=2048,p=0.5",
			want: Workload{Name: "hotset", Seed: 1, Hot: 2048, P: 32768}},
		{name: "p bounds", spec: "hotset:p=1", want: Workload{Name: "hotset", Seed: 1, Hot: 1024, P: 65536}},
		{name: "phased defaults", spec: "phased",
			want: Workload{Name: "phased", Seed: 1, Hot: 1024, P: 58982, Period: 100000}},
		{name: "sweep page writes", spec: "sweep:write=page,delay=100",
			want: Workload{Name: "sweep", WritePage: true, Delay: 100}},
		{name: "stream default loops", spec: "stream", want: Workload{Name: "stream", Loops: 1}},
		{name: "replay gate", spec: "replay:loops=1,gate=1", want: Workload{Name: "replay", Loops: 1, Gate: true}},
		{name: "zipf seed", spec: " zipf:seed=7 ", want: Workload{Name: "zipf", Seed: 7}},

		{name: "unknown workload", spec: "foo",
			wantErr: `unknown workload "foo" (want one of idle, hotset, uniform, sweep, zipf, phased, stream, replay)`},
		{name: "unknown parameter", spec: "hotset:x=1",
			wantErr: `workload hotset: unknown parameter "x" (want one of hot, p, seed, write, delay, gate)`},
		{name: "parameter of another workload", spec: "sweep:hot=1", wantErr: `workload sweep: unknown parameter "hot"`},
		{name: "idle takes no write", spec: "idle:write=page", wantErr: `workload idle: unknown parameter "write"`},
		{name: "p above 1", spec: "hotset:p=1.5", wantErr: "workload hotset: p: want a probability in [0, 1]"},
		{name: "p not a number", spec: "phased:p=x", wantErr: "workload phased: p: want a probability"},
		{name: "bad write", spec: "sweep:write=byte", wantErr: `workload sweep: write: want word or page, got "byte"`},
		{name: "bad gate", spec: "sweep:gate=yes", wantErr: "workload sweep: gate: want 0 or 1"},
		{name: "hot zero", spec: "hotset:hot=0", wantErr: "workload hotset: hot: want at least 1"},
		{name: "period zero", spec: "phased:period=0", wantErr: "workload phased: period: want at least 1"},
		{name: "too big", spec: "sweep:delay=4294967296", wantErr: "workload sweep: delay: want a decimal integer"},
		{name: "negative", spec: "stream:loops=-1", wantErr: "workload stream: loops: want a decimal integer"},
		{name: "twice", spec: "sweep:delay=1,delay=2", wantErr: "workload sweep: parameter delay given twice"},
		{name: "no value", spec: "uniform:seed", wantErr: "workload uniform: seed: want a decimal integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseWorkload(tt.spec)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("ParseWorkload(%q) error = %v, want prefix %q", tt.spec, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseWorkload(%q): %v", tt.spec, err)
			}
			if got != tt.want {
				t.Errorf("ParseWorkload(%q) = %+v, want %+v", tt.spec, got, tt.want)
			}
		})
	}
}

func TestCmdline(t *testing.T) {
	tests := []struct {
		spec string
		cpus int
		want string
	}{
		{"sweep", 1, "workload=sweep cpus=1"},
		{"sweep:write=page,delay=100,gate=1", 4, "workload=sweep cpus=4 write=page delay=100 gate=1"},
		{"idle", 1, "workload=idle cpus=1"},
		{"hotset:hot=2048,p=0.9", 2, "workload=hotset cpus=2 hot=2048 p=58982 seed=1"},
		{"phased:period=500", 1, "workload=phased cpus=1 hot=1024 p=58982 period=500 seed=1"},
		{"uniform:seed=9", 1, "workload=uniform cpus=1 seed=9"},
		{"zipf", 1, "workload=zipf cpus=1 seed=1"},
		{"stream", 1, "workload=stream cpus=1 loops=1"},
		{"replay:loops=1,gate=1", 1, "workload=replay cpus=1 loops=1 gate=1"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			w, err := ParseWorkload(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if got := w.Cmdline(tt.cpus); got != tt.want {
				t.Errorf("Cmdline(%d) = %q, want %q", tt.cpus, got, tt.want)
			}
		})
	}
}

func TestWorkloads(t *testing.T) {
	list := Workloads()
	if len(list) != 8 {
		t.Fatalf("Workloads() lists %d workloads, want 8", len(list))
	}
	for id, w := range list {
		if w.Name == "" || w.Description == "" {
			t.Errorf("workload %d: empty name or description: %+v", id, w)
		}
		if got := WorkloadName(uint32(id)); got != w.Name {
			t.Errorf("WorkloadName(%d) = %q, want %q", id, got, w.Name)
		}
		if _, err := ParseWorkload(w.Name); err != nil {
			t.Errorf("ParseWorkload(%q): %v", w.Name, err)
		}
	}
	list[0].Params[0] = "changed"
	if Workloads()[0].Params[0] == "changed" {
		t.Error("Workloads() shares its parameter lists with the caller")
	}
}

// TestDefaults: the defaults a workload's help says are those it runs with
// when none is given.
func TestDefaults(t *testing.T) {
	for _, info := range Workloads() {
		d := Defaults(info.Name)
		want, err := ParseWorkload(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		spec := info.Name
		if d != "" {
			spec += ":" + d
		}
		got, err := ParseWorkload(spec)
		if err != nil || got != want {
			t.Errorf("%s: %+v (%v), want %+v", spec, got, err, want)
		}
	}
	if d := Defaults("hotset"); d != "hot=1024,p=0.9,seed=1" {
		t.Errorf("hotset's defaults %q", d)
	}
	if d := Defaults("nothing"); d != "" {
		t.Errorf("no workload's defaults %q", d)
	}
}
