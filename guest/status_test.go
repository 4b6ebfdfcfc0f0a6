package guest

import (
	"encoding/binary"
	"strings"
	"testing"
)

const testStatusAddr = 0x102000

// fakeStatus is guest memory whose status page says what a running
// two-CPU sweep would.
func fakeStatus(t *testing.T) []byte {
	t.Helper()
	mem := make([]byte, MinMemory)
	put := func(off int, v uint32) { binary.LittleEndian.PutUint32(mem[testStatusAddr+off:], v) }
	put(OffMagic, StatusMagic)
	put(OffVersion, StatusVersion)
	put(OffState, uint32(StateRunning))
	put(OffWorkload, 3)
	put(OffCPUs, 2)
	put(OffArenaFirstPage, ArenaStart/PageSize)
	put(OffArenaPages, 1024)
	put(OffCPUStatus+OffProgressLo, 10)
	put(OffCPUStatus+OffProgressHi, 1)
	put(OffCPUStatus+OffCPUState, uint32(StateRunning))
	put(OffCPUStatus+CPUStatusSize+OffProgressLo, 5)
	put(OffCPUStatus+CPUStatusSize+OffCPUState, uint32(StateDone))
	return mem
}

func TestReadStatus(t *testing.T) {
	s, err := ReadStatus(fakeStatus(t), testStatusAddr)
	if err != nil {
		t.Fatal(err)
	}
	if s.State != StateRunning || s.CPUs != 2 || s.ArenaPages != 1024 || s.ArenaFirstPage != 1024 {
		t.Errorf("status = %+v", s)
	}
	if len(s.Progress) != 2 || s.Progress[0] != 1<<32+10 || s.Progress[1] != 5 {
		t.Errorf("progress = %v, want [%d 5]", s.Progress, uint64(1<<32+10))
	}
	if s.TotalProgress() != 1<<32+15 {
		t.Errorf("total progress = %d", s.TotalProgress())
	}
	if len(s.CPUStates) != 2 || s.CPUStates[1] != StateDone {
		t.Errorf("cpu states = %v", s.CPUStates)
	}
	want := "running workload=sweep cpus=2 arena=1024+1024 progress=4294967311"
	if got := s.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestReadStatusErrors(t *testing.T) {
	mem := fakeStatus(t)
	tests := []struct {
		name    string
		mem     []byte
		addr    uint64
		wantErr string
	}{
		{"beyond memory", mem, uint64(len(mem)), "read guest status: status page at"},
		{"not aligned", mem, testStatusAddr + 4, "read guest status: status page at"},
		{"wrong page", func() []byte {
			m := fakeStatus(t)
			binary.LittleEndian.PutUint32(m[testStatusAddr:], 0x12345678)
			return m
		}(), testStatusAddr, "read guest status: bad magic 0x12345678"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadStatus(tt.mem, tt.addr)
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("ReadStatus error = %v, want prefix %q", err, tt.wantErr)
			}
		})
	}
}

func TestStateNames(t *testing.T) {
	for s, want := range map[State]string{
		StateBooting: "booting", StateWaiting: "waiting", StateRunning: "running",
		StateDone: "done", StateFailed: "failed", 9: "state(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("State(%d) = %q, want %q", uint32(s), got, want)
		}
	}
	if got := ErrorCmdline.String(); got != "cmdline" {
		t.Errorf("ErrorCmdline = %q", got)
	}
}

func TestReleaseAndReplayTable(t *testing.T) {
	mem := fakeStatus(t)
	if err := Release(mem, testStatusAddr); err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint32(mem[testStatusAddr+OffGo:]); got != 1 {
		t.Errorf("go = %d after Release, want 1", got)
	}

	pages := []uint32{1024, 1030, 2047}
	if err := WriteReplayTable(mem, testStatusAddr, pages); err != nil {
		t.Fatal(err)
	}
	for i, p := range pages {
		if got := binary.LittleEndian.Uint32(mem[ReplayTableAddr+4*i:]); got != p {
			t.Errorf("table[%d] = %d, want %d", i, got, p)
		}
	}
	if s, _ := ReadStatus(mem, testStatusAddr); s.ReplayCount != 3 {
		t.Errorf("replay count = %d, want 3", s.ReplayCount)
	}
	if err := WriteReplayTable(mem, testStatusAddr, make([]uint32, ReplayTableMax+1)); err == nil {
		t.Error("WriteReplayTable with too many entries: no error")
	}
}
