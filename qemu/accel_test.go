package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fakeModules(t *testing.T, modules ...string) {
	t.Helper()
	dir := t.TempDir()
	for _, m := range modules {
		if err := os.Mkdir(filepath.Join(dir, m), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := sysModule
	sysModule = dir
	t.Cleanup(func() { sysModule = old })
}

func TestKVMEmulates(t *testing.T) {
	for _, c := range []struct {
		modules []string
		want    bool
	}{
		{nil, false},
		{[]string{"kvm", "kvm_intel"}, false},
		{[]string{"kvm", "kvm_amd"}, false},
		{[]string{"kvm", "kvm_pvm"}, true},
		{[]string{"kvm", "kvm_pvm", "kvm_intel"}, false},
	} {
		fakeModules(t, c.modules...)
		if got := KVMEmulates(); got != c.want {
			t.Errorf("modules %v: KVMEmulates %v, want %v", c.modules, got, c.want)
		}
	}
}

func TestResolveAccel(t *testing.T) {
	if got, _, err := ResolveAccel(AccelTCG); err != nil || got != AccelTCG {
		t.Errorf("tcg: %q, %v", got, err)
	}
	if _, _, err := ResolveAccel("hvf"); err == nil || !strings.Contains(err.Error(), "want auto, kvm or tcg") {
		t.Errorf("hvf: %v", err)
	}
	usable := KVMUsable()
	for _, modules := range [][]string{{"kvm", "kvm_intel"}, {"kvm", "kvm_pvm"}} {
		fakeModules(t, modules...)
		got, why, err := ResolveAccel(AccelAuto)
		if err != nil {
			t.Fatal(err)
		}
		want := AccelKVM
		switch {
		case usable != nil:
			want = AccelTCG
			if !strings.Contains(why, "no usable KVM") {
				t.Errorf("why %q", why)
			}
		case modules[1] == "kvm_pvm":
			want = AccelTCG
			if !strings.Contains(why, "kvm-pvm") {
				t.Errorf("why %q", why)
			}
		}
		if got != want {
			t.Errorf("auto with /dev/kvm %v and modules %v: %s (%s), want %s", usable, modules, got, why, want)
		}
		// kvm, asked for, is used wherever /dev/kvm opens, kvm-pvm's or
		// not; kvm-pvm's with a warning.
		got, why, err = ResolveAccel(AccelKVM)
		if (err == nil) != (usable == nil) || (err == nil && got != AccelKVM) {
			t.Errorf("kvm with /dev/kvm %v: %q, %v", usable, got, err)
		}
		if pvm := modules[1] == "kvm_pvm"; err == nil && pvm != strings.Contains(why, "kvm-pvm") {
			t.Errorf("kvm asked for, modules %v: why %q", modules, why)
		}
	}
}
