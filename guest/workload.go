package guest

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// A Workload is what the guest runs: a pattern of writes over the arena and
// its parameters. ParseWorkload makes one from the command-line syntax with
// the defaults filled in; Cmdline turns it into the guest's command line.
type Workload struct {
	Name      string // one of the names Workloads lists
	WritePage bool   // write whole pages (rep stosl) instead of one word per write
	Delay     uint32 // busy-loop iterations between writes
	Gate      bool   // wait at the gate until the host's go (Release)
	Seed      uint32 // hotset, uniform, zipf, phased
	Hot       uint32 // hot set pages: hotset, phased
	P         uint32 // probability that a write hits the hot set, in 1/65536: hotset, phased
	Period    uint32 // phased: writes between moves of the hot set
	Loops     uint32 // stream, replay: passes, 0 for ever
}

// WorkloadInfo describes a workload for help texts.
type WorkloadInfo struct {
	Name        string
	Description string
	Params      []string // the parameters it accepts
}

// workloads is indexed by the workload id in the status page.
var workloads = []WorkloadInfo{
	{"idle", "halts at once, dirtying nothing", []string{"gate"}},
	{"hotset", "writes the first hot pages with probability p, the others uniformly", writing("hot", "p", "seed")},
	{"uniform", "writes pages uniformly at random over the arena", writing("seed")},
	{"sweep", "writes the arena in order, wrapping for ever", writing()},
	{"zipf", "writes page x with probability ~1/x (log-uniform by octave, Zipf s≈1)", writing("seed")},
	{"phased", "hotset whose hot set moves to the next hot pages every period writes", writing("hot", "p", "period", "seed")},
	{"stream", "writes every arena page once per pass, loops passes (0: for ever)", writing("loops")},
	{"replay", "writes the pages of the replay table in order, loops passes (0: for ever)", writing("loops")},
}

// writing lists a writing workload's parameters: its own, then those all
// writing workloads take.
func writing(params ...string) []string {
	return append(params, "write", "delay", "gate")
}

// Workloads lists the workloads the guest runs, in the order of their ids
// in the status page.
func Workloads() []WorkloadInfo {
	list := slices.Clone(workloads)
	for i := range list {
		list[i].Params = slices.Clone(list[i].Params)
	}
	return list
}

// WorkloadName is the name of a workload id from the status page.
func WorkloadName(id uint32) string {
	if int(id) < len(workloads) {
		return workloads[id].Name
	}
	return fmt.Sprintf("workload(%d)", id)
}

func workloadInfo(name string) (WorkloadInfo, bool) {
	i := slices.IndexFunc(workloads, func(w WorkloadInfo) bool { return w.Name == name })
	if i < 0 {
		return WorkloadInfo{}, false
	}
	return workloads[i], true
}

// Defaults shared by ParseWorkload and the guest.
const (
	defaultSeed   = 1
	defaultHot    = 1024
	defaultP      = 0.9
	defaultPeriod = 100000
)

// ParseWorkload parses NAME[:key=val,key=val,...], for example "sweep",
// "hotset:hot=2048,p=0.9" or "replay:loops=1,gate=1". p is a probability
// in [0, 1]; write is word or page; gate is 0 or 1; the rest are decimal
// integers. Parameters left out take their defaults: seed=1; hotset and
// phased hot=1024, p=0.9; phased period=100000; stream loops=1; replay
// loops=0.
func ParseWorkload(spec string) (Workload, error) {
	name, params, _ := strings.Cut(strings.TrimSpace(spec), ":")
	info, ok := workloadInfo(name)
	if !ok {
		names := make([]string, len(workloads))
		for i, w := range workloads {
			names[i] = w.Name
		}
		return Workload{}, fmt.Errorf("unknown workload %q (want one of %s)", name, strings.Join(names, ", "))
	}

	w := Workload{Name: name}
	for _, p := range info.Params {
		switch p {
		case "seed":
			w.Seed = defaultSeed
		case "hot":
			w.Hot = defaultHot
		case "p":
			w.P = probability(defaultP)
		case "period":
			w.Period = defaultPeriod
		case "loops":
			if name == "stream" {
				w.Loops = 1
			}
		}
	}
	if params == "" {
		return w, nil
	}

	seen := map[string]bool{}
	for kv := range strings.SplitSeq(params, ",") {
		key, val, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if !slices.Contains(info.Params, key) {
			return Workload{}, fmt.Errorf("workload %s: unknown parameter %q (want one of %s)",
				name, key, strings.Join(info.Params, ", "))
		}
		if seen[key] {
			return Workload{}, fmt.Errorf("workload %s: parameter %s given twice", name, key)
		}
		seen[key] = true
		if err := w.set(key, val); err != nil {
			return Workload{}, fmt.Errorf("workload %s: %s: %w", name, key, err)
		}
	}
	return w, nil
}

// set parses one parameter value.
func (w *Workload) set(key, val string) error {
	switch key {
	case "write":
		switch val {
		case "word", "page":
			w.WritePage = val == "page"
			return nil
		}
		return fmt.Errorf("want word or page, got %q", val)
	case "gate":
		switch val {
		case "0", "1":
			w.Gate = val == "1"
			return nil
		}
		return fmt.Errorf("want 0 or 1, got %q", val)
	case "p":
		p, err := strconv.ParseFloat(val, 64)
		if err != nil || p < 0 || p > 1 {
			return fmt.Errorf("want a probability in [0, 1], got %q", val)
		}
		w.P = probability(p)
		return nil
	}

	n, err := strconv.ParseUint(val, 10, 32)
	if err != nil {
		return fmt.Errorf("want a decimal integer below 2^32, got %q", val)
	}
	v := uint32(n)
	switch key {
	case "delay":
		w.Delay = v
	case "seed":
		w.Seed = v
	case "loops":
		w.Loops = v
	case "hot", "period":
		if v == 0 {
			return fmt.Errorf("want at least 1, got %q", val)
		}
		if key == "hot" {
			w.Hot = v
		} else {
			w.Period = v
		}
	}
	return nil
}

// probability converts p in [0, 1] to the guest's 1/65536 units.
func probability(p float64) uint32 {
	return uint32(math.Round(p * 65536))
}

// Defaults says the parameters of its own that the workload name takes,
// at their defaults, as --workload takes them ("hot=1024,p=0.9,seed=1");
// "" for none, or for no such workload.
func Defaults(name string) string {
	w, err := ParseWorkload(name)
	if err != nil {
		return ""
	}
	info, _ := workloadInfo(name)
	var kv []string
	for _, p := range info.Params {
		switch v, ok := w.number(p); {
		case p == "p":
			kv = append(kv, "p="+strconv.FormatFloat(float64(w.P)/65536, 'g', 3, 64))
		case ok && p != "delay": // write, delay, gate: every writing workload's
			kv = append(kv, p+"="+strconv.FormatUint(uint64(v), 10))
		}
	}
	return strings.Join(kv, ",")
}

// number is w's value of the numeric parameter p as the guest takes it (p
// in 1/65536); false for write and gate, which are not numbers.
func (w Workload) number(p string) (uint32, bool) {
	switch p {
	case "delay":
		return w.Delay, true
	case "seed":
		return w.Seed, true
	case "hot":
		return w.Hot, true
	case "p":
		return w.P, true
	case "period":
		return w.Period, true
	case "loops":
		return w.Loops, true
	}
	return 0, false
}

// Cmdline is the guest command line that runs w on cpus vCPUs (1 to
// MaxCPUs; the guest refuses others). Parameters that w's workload does
// not take are left out, and so are write, delay and gate at their
// defaults.
func (w Workload) Cmdline(cpus int) string {
	args := []string{"workload=" + w.Name, "cpus=" + strconv.Itoa(cpus)}
	info, _ := workloadInfo(w.Name)
	for _, p := range info.Params {
		switch v, ok := w.number(p); {
		case p == "write" && w.WritePage:
			args = append(args, "write=page")
		case p == "gate" && w.Gate:
			args = append(args, "gate=1")
		case ok && (p != "delay" || v != 0):
			args = append(args, p+"="+strconv.FormatUint(uint64(v), 10))
		}
	}
	return strings.Join(args, " ")
}
