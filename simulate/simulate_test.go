package simulate

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/migrator/mecom"
	"github.com/pagecast/pagecast/trace"
)

func TestSyntheticEpochs(t *testing.T) {
	const pages = 1 << 20
	w, err := ParseSynthetic("hotset:hot=16384,p=0.8,rate=100k,seed=7", pages, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	a := w.Dirty(nil, 3)
	if !slices.Equal(a, w.Dirty(nil, 3)) {
		t.Fatal("epoch 3 differs between two calls")
	}
	if slices.Equal(a, w.Dirty(nil, 4)) {
		t.Fatal("epochs 3 and 4 are the same")
	}
	if !slices.IsSorted(a) || len(slices.Compact(slices.Clone(a))) != len(a) {
		t.Fatal("pages not ascending and distinct")
	}
	// 10 000 pages an epoch, 8 000 of them in the hot set; the other 2 000
	// anywhere (a few of which land in the hot set too).
	hot := 0
	for _, p := range a {
		if p >= pages {
			t.Fatalf("page %d beyond the guest", p)
		}
		if p < 16384 {
			hot++
		}
	}
	if len(a) < 9950 || len(a) > 10000 || hot < 8000 || hot > 8100 {
		t.Fatalf("%d pages, %d hot; want about 10000 and 8000", len(a), hot)
	}
	s, err := ParseSynthetic("sweep:rate=1000", 2500, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Dirty(nil, 2); len(got) != 1000 || got[0] != 0 || got[499] != 499 || got[500] != 2000 {
		t.Fatalf("sweep epoch 2 wraps wrongly: %d pages, %v … %v", len(got), got[:3], got[len(got)-3:])
	}
}

// TestSyntheticRate: an epoch writing a fraction of a page a time (or a
// page and a fraction) writes the rate over a run of epochs: rounded an
// epoch at a time, rate=10000 wrote 20 000 pages a second in epochs of
// 50 µs and none in epochs of 20 µs (walk 53). uniform and sweep in a
// guest under 4 MiB are not refused for hotset's hot set (walk 53).
func TestSyntheticRate(t *testing.T) {
	for _, tc := range []struct {
		spec  string
		pages uint64
		epoch time.Duration
	}{
		{"uniform:rate=10000", 1 << 16, 50 * time.Microsecond},
		{"uniform:rate=10000", 1 << 16, 20 * time.Microsecond},
		{"uniform:rate=10000", 1 << 16, 150 * time.Microsecond},
		{"hotset:rate=10000,hot=64,p=0.9", 1 << 16, 30 * time.Microsecond},
		{"sweep:rate=10000", 1 << 16, 70 * time.Microsecond},
		{"uniform:rate=1k", 256, 10 * time.Millisecond},
		{"sweep:rate=1k", 256, 10 * time.Millisecond},
	} {
		w, err := ParseSynthetic(tc.spec, tc.pages, tc.epoch)
		if err != nil {
			t.Errorf("%s in %d pages: %v", tc.spec, tc.pages, err)
			continue
		}
		epochs := uint64(time.Second / tc.epoch)
		var n uint64
		for i := range epochs {
			n += uint64(len(w.Dirty(nil, i)))
		}
		want := w.rate * float64(epochs) * tc.epoch.Seconds()
		if math.Abs(float64(n)-want) > 1+want/1000 {
			t.Errorf("%s in epochs of %v: %d pages written in %d epochs, want %.0f", tc.spec, tc.epoch, n, epochs, want)
		}
	}
}

// TestSyntheticShareRounding: a share a rounding puts just under a whole
// number is that number: hotset with p=0.29 at 100 pages an epoch writes
// 29 hot pages in epoch 0, not 28 (0.29×100 is 28.999999999999996;
// review 54).
func TestSyntheticShareRounding(t *testing.T) {
	w, err := ParseSynthetic("hotset:hot=1000,p=0.29,rate=1000", 1<<16, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint64(3) {
		if n := count(w.perHot, i); n != 29 {
			t.Errorf("epoch %d: %d hot pages, want 29", i, n)
		}
		if n := count(w.perEp, i); n != 100 {
			t.Errorf("epoch %d: %d pages, want 100", i, n)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"zipf":                    "want hotset, uniform or sweep",
		"hotset:hot=0":            "hot set of 0 pages",
		"hotset:hot=1k":           "hot=1k: 1k is 1024 bytes, not a whole number of 4 KiB pages: give pages as a plain number (1000)",
		"hotset:p=1.5":            "probability",
		"uniform:hot=4":           "unknown parameter",
		"uniform:rate=1G":         "more than the guest's",
		"uniform:rate=fast":       "pages per second",
		"uniform:rate=1k,rate=2k": "rate given twice", // walk 129: the last won
	} {
		if _, err := ParseSynthetic(spec, 1<<16, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", spec, err, want)
		}
	}
	for spec, want := range map[string]string{
		"zero=1,blue=2": "unknown class",
		"zero=-1":       "share",
		"zero=0":        "no class",
	} {
		if _, err := ParseMix(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("mix %s: %v, want %q", spec, err, want)
		}
	}
}

func TestContents(t *testing.T) {
	m, err := ParseMix("zero=2,text=1,random=1")
	if err != nil {
		t.Fatal(err)
	}
	// Pages 5 and 6 were seen to hold repeated words and zeros: once
	// written, each holds what was seen (a guest may write zeros: see
	// TestWrittenZeros); the others what the mix gives, not zero.
	c, err := newContents(m, Mix{}, map[uint64]mecom.Class{5: mecom.Repeat, 6: mecom.Zero}, nil, nil, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	var n [4]int
	for g := range uint64(1 << 16) {
		page := c.Page(g)
		cl := mecom.Classify(page)
		if c.Zero(g) != (cl == mecom.Zero) {
			t.Fatalf("page %d: Zero %v, but it classifies as %s", g, c.Zero(g), cl)
		}
		n[cl]++
	}
	if n[mecom.Zero] < 32000 || n[mecom.Zero] > 33500 || n[mecom.Repeat] != 0 || n[mecom.LowEntropy] < 16000 || n[mecom.LowEntropy] > 16800 {
		t.Fatalf("classes %v for mix %s", n, m)
	}
	for g := range uint64(1 << 16) {
		c.write(g)
		if c.Zero(g) != (g == 6) {
			t.Fatalf("page %d: zero %v once written", g, c.Zero(g))
		}
		if cl := mecom.Classify(c.Page(g)); (g == 5) != (cl == mecom.Repeat) {
			t.Fatalf("page %d holds %s once written", g, cl)
		}
	}
	mem := make([]byte, 8*mecom.PageSize)
	copy(mem[mecom.PageSize:], c.samples[mecom.HighEntropy][0])
	if got := MeasureMix(mem, 1, nil); got != (Mix{7.0 / 8, 0, 0, 1.0 / 8}) {
		t.Fatalf("MeasureMix: %v", got)
	}
	if got := ClassMix(map[uint64]mecom.Class{0: mecom.Zero, 1: mecom.HighEntropy, 2: mecom.Zero, 3: mecom.Zero}); got != (Mix{3.0 / 4, 0, 0, 1.0 / 4}) {
		t.Fatalf("ClassMix: %v", got)
	}
}

// TestSamplePages: pages taken from a guest's memory, holes skipped, stand
// for their class in place of generated ones, those it wrote for the
// pages it writes; a page of the wrong class is refused.
func TestSamplePages(t *testing.T) {
	gen, err := sampleSet()
	if err != nil {
		t.Fatal(err)
	}
	// A memory of 4096 pages: every 4th holds random bytes (a copy of a
	// generated one with a marker), the rest zeros; page 8 is a hole
	// holding random bytes (read, it would be allocated).
	mem := make([]byte, 4096*mecom.PageSize)
	for g := 0; g < 4096; g += 4 {
		p := mem[g*mecom.PageSize : (g+1)*mecom.PageSize]
		copy(p, gen[mecom.HighEntropy][g/4%samplesPerClass])
		binary.LittleEndian.PutUint32(p, uint32(g))
	}
	holes := bitmap.New(4096)
	holes.Set(8)
	s := SamplePages(mem, holes)
	if len(s[mecom.HighEntropy]) != samplesPerClass || len(s[mecom.Zero]) != samplesPerClass || len(s[mecom.LowEntropy]) != 0 {
		t.Fatalf("samples per class: %d %d %d %d", len(s[0]), len(s[1]), len(s[2]), len(s[3]))
	}
	seen := map[uint32]bool{}
	last := uint32(0)
	for _, p := range s[mecom.HighEntropy] {
		g := binary.LittleEndian.Uint32(p)
		if g == 8 || g%4 != 0 || seen[g] {
			t.Fatalf("sample of page %d (a hole, not random, or twice)", g)
		}
		seen[g], last = true, max(last, g)
	}
	if last < 3800 { // spread over memory, not its first random pages
		t.Fatalf("the random samples end at page %d of 4096", last)
	}
	m, _ := ParseMix("random=1")
	c, err := newContents(m, Mix{}, nil, s, nil, 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	for g := range uint64(1 << 10) {
		if p := c.Page(g); !seen[binary.LittleEndian.Uint32(p)] || !bytes.Equal(p[4:], gen[mecom.HighEntropy][binary.LittleEndian.Uint32(p)/4%samplesPerClass][4:]) {
			t.Fatalf("page %d is not one of the guest's", g)
		}
	}
	// Pages the guest wrote while watched stand for the pages it writes,
	// and only for those: a page once written takes one of them.
	w := SampleWritten(mem, []uint64{12, 4, 4000, 8, 99999})
	if len(w[mecom.HighEntropy]) != 4 || len(w[mecom.Zero]) != 0 { // 99999 is past memory
		t.Fatalf("written samples per class: %d %d %d %d", len(w[0]), len(w[1]), len(w[2]), len(w[3]))
	}
	c, err = newContents(m, Mix{}, nil, s, w, 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	for g := range uint64(1 << 10) {
		c.write(g)
		if mark := binary.LittleEndian.Uint32(c.Page(g)); mark != 4 && mark != 8 && mark != 12 && mark != 4000 {
			t.Fatalf("page %d, written, is the guest's page %d, not one it wrote", g, mark)
		}
	}
	var wrong Samples
	wrong[mecom.LowEntropy] = [][]byte{gen[mecom.HighEntropy][0]}
	if _, err := newContents(m, Mix{}, nil, &wrong, nil, 1<<10); err == nil || !strings.Contains(err.Error(), "is not a low-entropy page") {
		t.Fatalf("a random page as text: %v", err)
	}
}

// idle is a workload that writes nothing.
func idle(pages uint64, epochs int) *Trace {
	w, err := NewTrace("idle", trace.Meta{MemoryBytes: pages * 4096, PageSize: 4096, Epoch: 100 * time.Millisecond},
		[]trace.Epoch{{Index: 0}, {Index: uint64(epochs - 1)}})
	if err != nil {
		panic(err)
	}
	return w
}

// TestIdleGuest: a guest that writes nothing goes in one round, each page
// once, at the link's rate; every mode agrees.
func TestIdleGuest(t *testing.T) {
	const pages = 4096
	w := idle(pages, 10)
	mix, _ := ParseMix("zero=1,random=1")
	for _, mode := range []string{"precopy", "predictive", "throttle", "tsmc"} {
		o := Options{Workload: w, Bandwidth: 8 << 20, Content: mix, StateBytes: 1000, ChecksumRate: -1}
		r := Run(context.Background(), o, mode)
		if r.Err != nil {
			t.Fatal(mode, r.Err)
		}
		i := r.Info
		sent := i.RAM.Normal + i.RAM.Duplicate
		if sent != pages || i.RAM.PostcopyRequests != 0 || i.CPUThrottlePercentage != 0 {
			t.Fatalf("%s: %d pages sent (%d normal), %d pulled, throttle %d%%", mode, sent, i.RAM.Normal, i.RAM.PostcopyRequests, i.CPUThrottlePercentage)
		}
		// About half the pages are random (4104 bytes on the wire each);
		// zero runs cost little.
		if min, max := i.RAM.Normal*(4096+8), i.RAM.Normal*(4096+8)+pages*40+2000; i.RAM.Transferred < min || i.RAM.Transferred > max {
			t.Fatalf("%s: %d bytes for %d whole pages", mode, i.RAM.Transferred, i.RAM.Normal)
		}
		want := time.Duration(float64(i.RAM.Transferred) / (8 << 20) * float64(time.Second))
		if got := time.Duration(i.TotalTime) * time.Millisecond; got < want-2*time.Millisecond || got > want+2*time.Millisecond {
			t.Fatalf("%s: %v for %d bytes at 8 MiB/s, want %v", mode, got, i.RAM.Transferred, want)
		}
		// The source's checksums after the switch-over read the half of
		// memory that holds data (the zero pages were never written: holes)
		// and lengthen the migration by that at their rate, not its pause.
		o.ChecksumRate = 64 << 20
		c := Run(context.Background(), o, mode)
		if c.Err != nil {
			t.Fatal(mode, c.Err)
		}
		// The link idle meanwhile, the Limiter lets up to a burst of its
		// time (20 ms) be made up after, where pages are still to go.
		want += time.Duration(float64(pages/2*migrator.PageSize) / (64 << 20) * float64(time.Second)) // 125 ms
		if got := time.Duration(c.Info.TotalTime) * time.Millisecond; got < want-22*time.Millisecond || got > want+2*time.Millisecond || c.Info.Downtime != i.Downtime {
			t.Fatalf("%s with the checksums at 64 MiB/s: %v in all, downtime %d ms; want %v, downtime %d ms", mode, got, c.Info.Downtime, want, i.Downtime)
		}
		// check-time says what they added (walk 104: no column did).
		if added := c.Info.TotalTime - i.TotalTime; c.Info.Pagecast.CheckTime < added-25 || c.Info.Pagecast.CheckTime > added+25 {
			t.Errorf("%s: check-time %d ms, where the checksums added %d ms", mode, c.Info.Pagecast.CheckTime, added)
		}
	}
}

// TestPageRate: where the engine's own path moves fewer pages a second
// than the link could carry, the page rate sets the time; where it moves
// more, the link does, and the time is the link's as without it.
func TestPageRate(t *testing.T) {
	const pages = 4096
	w := idle(pages, 10)
	mix, _ := ParseMix("zero=1,random=1")
	for _, mode := range []string{"precopy", "mecom", "tsmc"} {
		run := func(bandwidth uint64, rate float64) migrator.Info {
			o := Options{Workload: w, Bandwidth: bandwidth, Content: mix, StateBytes: 1000, ChecksumRate: -1, PageRate: rate}
			r := Run(context.Background(), o, mode)
			if r.Err != nil {
				t.Fatal(mode, r.Err)
			}
			return r.Info
		}
		ms := func(i migrator.Info) time.Duration { return time.Duration(i.TotalTime) * time.Millisecond }
		// 4.1 s for the guest's pages at 1000 a second, where the link
		// (128 MiB/s) would take 65 ms.
		want := time.Duration(float64(pages) / 1000 * float64(time.Second))
		if got := ms(run(128<<20, 1000)); got < want || got > want+30*time.Millisecond {
			t.Errorf("%s at 1000 pages/s: %v, want %v", mode, got, want)
		}
		// A link of 8 MiB/s takes 1 s, and 4096 pages at a million a
		// second take 4 ms: the link's time, as with no page rate.
		link, fast := run(8<<20, 0), run(8<<20, 1e6)
		if ms(link) > 1100*time.Millisecond || ms(fast) < ms(link) || ms(fast) > ms(link)+10*time.Millisecond {
			t.Errorf("%s at 8 MiB/s: %v at a million pages/s, %v without a page rate; want the link's 1 s", mode, ms(fast), ms(link))
		}
		if fast.RAM.Transferred != link.RAM.Transferred {
			t.Errorf("%s: %d bytes at a million pages/s, %d without a page rate", mode, fast.RAM.Transferred, link.RAM.Transferred)
		}
	}
}

// TestPageRateDowntime: where the engine's own path, not the link, sets
// the pace, round 1 judges what the stop-and-copy can send by the rate it
// moves, not the link's cap, and the downtime keeps to the limit. (Judged
// by the cap, these stopped in round 1 with 16-17 MB pending: 1.0-2.1 s
// of downtime against 300 ms.)
func TestPageRateDowntime(t *testing.T) {
	for _, spec := range []string{"hotset:hot=300,p=0.9,rate=1000", "hotset:hot=200,p=0.9,rate=3000", "uniform:rate=300"} {
		w, err := ParseSynthetic(spec, 1<<14, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for _, rate := range []float64{4000, 2000} { // 16 and 8 MB/s against a 64 MiB/s link
			r := Run(context.Background(), Options{Workload: w, Bandwidth: 64 << 20, PageRate: rate}, "precopy")
			if r.Err != nil {
				t.Fatal(spec, r.Err)
			}
			if i := r.Info; i.Downtime > 300 {
				t.Errorf("%s at %v pages/s: downtime %d ms against a limit of 300 (%s)", spec, rate, i.Downtime, i.Pagecast.StopReason)
			}
		}
	}
}

// TestPausedPageRate: where the engine's page rate sets the pace, a
// faster rate while the guest is paused shortens the stop-and-copy, and
// no live round: the same rounds, the same pages, less downtime (the
// stop-and-copy of a 128 MiB TCG guest moved twice round 1's pace on two
// cores, its vCPU's core freed, and auto, charging the pause at the
// running rate, predicted +60-65% of the time: walk 69).
func TestPausedPageRate(t *testing.T) {
	w, err := ParseSynthetic("hotset:hot=3000,p=0.9,rate=20000", 1<<15, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Workload: w, Bandwidth: 1 << 30, PageRate: 100000}
	same := Run(context.Background(), o, "precopy")
	o.PausedPageRate = 100000
	alike := Run(context.Background(), o, "precopy")
	o.PausedPageRate = 200000
	paused := Run(context.Background(), o, "precopy")
	if same.Err != nil || alike.Err != nil || paused.Err != nil {
		t.Fatal(same.Err, alike.Err, paused.Err)
	}
	t.Logf("downtime %d ms, %d ms at the same paused rate, %d ms at twice; total %d, %d, %d ms",
		same.Info.Downtime, alike.Info.Downtime, paused.Info.Downtime, same.Info.TotalTime, alike.Info.TotalTime, paused.Info.TotalTime)
	if same.Info.Downtime != alike.Info.Downtime || same.Info.TotalTime != alike.Info.TotalTime {
		t.Errorf("a paused rate equal to the page rate changed the migration: %+v against %+v", alike.Info, same.Info)
	}
	if !slices.Equal(paused.Info.Pagecast.RoundPages, same.Info.Pagecast.RoundPages) {
		t.Errorf("rounds %v at twice the paused rate, %v without: the live rounds moved", paused.Info.Pagecast.RoundPages, same.Info.Pagecast.RoundPages)
	}
	if d, s := paused.Info.Downtime, same.Info.Downtime; d >= s || float64(d) > 0.7*float64(s) {
		t.Errorf("downtime %d ms at twice the paused rate against %d ms: want it near halved", d, s)
	}
	// A throttled guest leaves its cores to the migration too, as far
	// as it is throttled (review 73): throttle's live rounds go faster.
	hot, err := ParseSynthetic("hotset:hot=30000,p=0.95,rate=200000", 1<<15, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	o = Options{Workload: hot, Bandwidth: 1 << 30, PageRate: 50000}
	plain := Run(context.Background(), o, "throttle")
	o.PausedPageRate = 100000
	freed := Run(context.Background(), o, "throttle")
	if plain.Err != nil || freed.Err != nil {
		t.Fatal(plain.Err, freed.Err)
	}
	live := func(r Result) int64 { return r.Info.TotalTime - r.Info.Downtime }
	t.Logf("throttle: live %d ms, rounds %v; with the cores its vCPUs leave, live %d ms, rounds %v", live(plain), plain.Info.Pagecast.RoundPages, live(freed), freed.Info.Pagecast.RoundPages)
	if live(freed) >= live(plain) {
		t.Errorf("throttle's live rounds: %d ms with the freed cores, %d without", live(freed), live(plain))
	}
}

// TestPolicyTime: charged, the predictor's own time lengthens a
// predictive migration whose engine sets the pace (a page rate below the
// link's), as it holds up the live sender; pre-copy's policy does nothing
// and its migration takes what it took. (Where the link sets the pace,
// the Limiter lets up to a burst of the idle link's time be made up.)
func TestPolicyTime(t *testing.T) {
	w, err := ParseSynthetic("hotset:hot=2000,p=0.9,rate=5000", 1<<16, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"predictive", "precopy"} {
		o := Options{Workload: w, Bandwidth: 64 << 20, PageRate: 10000} // 40 MB/s
		off := Run(context.Background(), o, mode)
		o.PolicyTime = true
		on := Run(context.Background(), o, mode)
		if off.Err != nil || on.Err != nil {
			t.Fatal(mode, off.Err, on.Err)
		}
		t.Logf("%s: %d ms, %d ms with the policy's time", mode, off.Info.TotalTime, on.Info.TotalTime)
		switch {
		case mode == "predictive" && on.Info.TotalTime <= off.Info.TotalTime:
			t.Errorf("predictive: %d ms with the predictor's time, %d without", on.Info.TotalTime, off.Info.TotalTime)
		case mode == "precopy" && (on.Info.TotalTime < off.Info.TotalTime || on.Info.TotalTime > off.Info.TotalTime+1): // its no-op's nanoseconds may cross a millisecond
			t.Errorf("precopy: %d ms with the policy's time, %d without", on.Info.TotalTime, off.Info.TotalTime)
		}
	}
}

// TestModesOnAHotSet: on a hot set larger than the downtime limit lets
// the link move, plain pre-copy runs into the round cap; throttle slows the
// guest until it converges; TSMC sends everything once and pulls what the
// guest touches before the push gets there; MECOM sends fewer bytes.
func TestModesOnAHotSet(t *testing.T) {
	const pages = 1 << 15 // 128 MiB
	// 20 000 pages/s (80 MB/s) against a 32 MiB/s link: pre-copy cannot
	// converge, since the 4000-page hot set is rewritten every round.
	w, err := ParseSynthetic("hotset:hot=4000,p=0.95,rate=20000", pages, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Workload: w, Bandwidth: 32 << 20, DowntimeLimit: 100 * time.Millisecond, MaxRounds: 10}
	res := map[string]migrator.Info{}
	for _, mode := range []string{"precopy", "throttle", "tsmc", "mecom", "predictive+tsmc"} {
		r := Run(context.Background(), o, mode)
		if r.Err != nil {
			t.Fatal(mode, r.Err)
		}
		res[mode] = r.Info
		t.Logf("%s: %d ms, downtime %d ms, %d bytes, rounds %v, throttle %d%%, pulled %d", mode, r.Info.TotalTime, r.Info.Downtime,
			r.Info.RAM.Transferred, r.Info.Pagecast.RoundPages, r.Info.CPUThrottlePercentage, r.Info.RAM.PostcopyRequests)
	}
	if p := res["precopy"]; p.Pagecast.Round < 10 || p.Downtime < 300 {
		t.Errorf("precopy converged: %d rounds, downtime %d ms", p.Pagecast.Round, p.Downtime)
	}
	if th := res["throttle"]; th.CPUThrottlePercentage == 0 || th.Downtime > 130 || th.Pagecast.Round >= 10 {
		t.Errorf("throttle: %d%%, downtime %d ms, %d rounds", th.CPUThrottlePercentage, th.Downtime, th.Pagecast.Round)
	}
	ts := res["tsmc"]
	if ts.RAM.PostcopyRequests == 0 || ts.Pagecast.Round != 2 || ts.Pagecast.RoundPages[0] != pages {
		t.Errorf("tsmc: rounds %v, pulled %d", ts.Pagecast.RoundPages, ts.RAM.PostcopyRequests)
	}
	if ts.RAM.Transferred > 2*pages*4200 {
		t.Errorf("tsmc sent %d bytes: a page crosses at most twice", ts.RAM.Transferred)
	}
	// MECOM picks codecs by their measured CPU cost against the link, so
	// it compresses less under the race detector (0.72× here) than
	// without (0.34×).
	// predictive+tsmc leaves the hot set out of stage 1: every page
	// crosses once unless the forecast missed it, so fewer bytes than
	// tsmc and within memory plus 10%.
	if h := res["predictive+tsmc"]; h.Pagecast.DeferredAll < 2000 || h.RAM.Transferred >= ts.RAM.Transferred ||
		h.RAM.Transferred > pages*4096*11/10 || h.Downtime >= 50 || h.RAM.PostcopyRequests == 0 {
		t.Errorf("predictive+tsmc: deferred %d, %d bytes (tsmc %d), downtime %d ms, pulled %d", h.Pagecast.DeferredAll,
			h.RAM.Transferred, ts.RAM.Transferred, h.Downtime, h.RAM.PostcopyRequests)
	}
	if m, p := res["mecom"], res["precopy"]; m.RAM.Transferred >= p.RAM.Transferred*4/5 {
		t.Errorf("mecom %d bytes, precopy %d", m.RAM.Transferred, p.RAM.Transferred)
	}

	// The guest's slowdown: none where nothing throttles or faults; the
	// throttle's share of the time the guest ran; a fault's wait, a push
	// of 32 pages on the link (3.9 ms at 32 MiB/s) and its own page, for
	// every page pulled.
	for _, mode := range []string{"precopy", "mecom"} {
		if i := res[mode]; i.Pagecast.ThrottleTime != 0 || i.Pagecast.FaultTime != 0 || i.GuestSlowdown() != 0 {
			t.Errorf("%s slowed the guest: throttle %d ms, faults %d ms", mode, i.Pagecast.ThrottleTime, i.Pagecast.FaultTime)
		}
	}
	th := res["throttle"]
	if running := th.TotalTime - th.Downtime; th.Pagecast.ThrottleTime <= 0 || th.Pagecast.ThrottleTime > running*99/100 || th.Pagecast.FaultTime != 0 {
		t.Errorf("throttle: throttle-time %d ms, fault-time %d ms, over %d ms running", th.Pagecast.ThrottleTime, th.Pagecast.FaultTime, running)
	}
	for _, mode := range []string{"tsmc", "predictive+tsmc"} {
		i := res[mode]
		wait := float64(i.Pagecast.FaultTime) / float64(i.RAM.PostcopyRequests)
		t.Logf("%s: guest slowed %.1f%%, %.2f ms a page pulled", mode, 100*i.GuestSlowdown(), wait)
		if push := float64(32*4096) / float64(32<<20) * 1000; wait < push*0.9 || wait > push*1.1 || i.Pagecast.ThrottleTime != 0 {
			t.Errorf("%s: %d ms of faults for %d pages pulled (%.2f ms each, a push takes %.2f ms), throttle %d ms", mode,
				i.Pagecast.FaultTime, i.RAM.PostcopyRequests, wait, push, i.Pagecast.ThrottleTime)
		}
		if s := i.GuestSlowdown(); s <= 0 || s >= 1 {
			t.Errorf("%s: guest slowed %v", mode, s)
		}
	}
}

// TestChecksumsBesideStage3: in TSMC the source sums its paused memory
// while stage 3 pushes the pages left, so the sums lengthen the migration
// only where they outlast the push.
func TestChecksumsBesideStage3(t *testing.T) {
	const pages = 1 << 15 // 128 MiB
	w, err := ParseSynthetic("hotset:hot=4000,p=0.95,rate=20000", pages, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	run := func(rate float64) migrator.Info {
		t.Helper()
		r := Run(context.Background(), Options{Workload: w, Bandwidth: 32 << 20, DowntimeLimit: 100 * time.Millisecond, ChecksumRate: rate}, "tsmc")
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return r.Info
	}
	none, fast, slow := run(-1), run(1<<30), run(16<<20)
	// Half of memory holds data, and the hot set was written: over 64 MiB
	// to sum, some 70 ms at 1 GiB/s, over 4 s at 16 MiB/s; stage 3 pushes
	// about 4000 pages, some 0.5 s at 32 MiB/s.
	t.Logf("total %d ms, with the sums at 1 GiB/s %d ms, at 16 MiB/s %d ms", none.TotalTime, fast.TotalTime, slow.TotalTime)
	if fast.TotalTime != none.TotalTime || fast.Downtime != none.Downtime {
		t.Errorf("sums shorter than stage 3 changed the migration: %d ms in all, downtime %d ms; uncounted %d ms, %d ms", fast.TotalTime, fast.Downtime, none.TotalTime, none.Downtime)
	}
	if slow.Downtime != none.Downtime || slow.TotalTime <= none.TotalTime+3000 || slow.TotalTime >= none.TotalTime+4300 {
		t.Errorf("sums of over 4 s beside a 0.5 s stage 3: %d ms in all, downtime %d ms; uncounted %d ms, %d ms", slow.TotalTime, slow.Downtime, none.TotalTime, none.Downtime)
	}
	// check-time: what the sums added past the push.
	if added := slow.TotalTime - none.TotalTime; slow.Pagecast.CheckTime < added-25 || slow.Pagecast.CheckTime > added+25 || fast.Pagecast.CheckTime > 25 || none.Pagecast.CheckTime != 0 {
		t.Errorf("check-time %d ms, where the sums added %d ms; %d ms where they added none, %d ms where they were not counted", slow.Pagecast.CheckTime, added, fast.Pagecast.CheckTime, none.Pagecast.CheckTime)
	}
}

// TestReplay: a trace shorter than the migration starts over, and the
// result says how often.
func TestReplay(t *testing.T) {
	r := Run(context.Background(), Options{Workload: idle(1<<14, 5), Bandwidth: 8 << 20}, "precopy")
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	// 64 MiB, about half of it not zero, at 8 MiB/s: about 4 s, eight
	// laps of a 0.5 s trace.
	if r.Replays < 6 || r.Replays > 9 {
		t.Fatalf("%d replays in %d ms", r.Replays, r.Info.TotalTime)
	}
}

func TestImpossible(t *testing.T) {
	w := idle(1024, 10)
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Workload: w}, "bandwidth 0"},
		{Options{Workload: w, Bandwidth: 1 << 20, DowntimeLimit: time.Millisecond}, "less than one 4096-byte page"},
		{Options{Workload: w, Bandwidth: 1 << 20, Start: 10}, "has 10 epochs"},
		{Options{Workload: w, Bandwidth: 1 << 20, StateBytes: -1}, "device state of -1 bytes"}, // was a panic (makeslice)
		{Options{Workload: w, Bandwidth: 1 << 20, StateBytes: 1 << 40}, "device state of 1099511627776 bytes"},
	} {
		r := Run(context.Background(), tc.o, "precopy")
		if r.Err == nil || !strings.Contains(r.Err.Error(), tc.want) || strings.Contains(r.Err.Error(), "\n") {
			t.Errorf("%+v: %v, want one line with %q", tc.o, r.Err, tc.want)
		}
	}
}

func TestCancel(t *testing.T) {
	w, err := ParseSynthetic("uniform:rate=1000", 1<<20, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := Run(ctx, Options{Workload: w, Bandwidth: 1 << 20}, "precopy")
	if r.Err == nil || !strings.Contains(r.Err.Error(), "cancelled") {
		t.Fatalf("cancelled simulation: %v", r.Err)
	}
}

// TestHarvestWithinEpoch: a harvest in the middle of an epoch returns the
// pages written so far in it, the next the rest, each page once.
func TestHarvestWithinEpoch(t *testing.T) {
	pages := make([]uint64, 1000)
	for i := range pages {
		pages[i] = uint64(i) * 3
	}
	w, err := NewTrace("t", trace.Meta{MemoryBytes: 4096 * 4096, PageSize: 4096, Epoch: time.Second},
		[]trace.Epoch{{Index: 0, Pages: pages}, {Index: 1}})
	if err != nil {
		t.Fatal(err)
	}
	clock := migrator.NewVirtualClock(time.Unix(0, 0))
	lister := pageLister(t, w, clock)
	clock.Advance(250 * time.Millisecond)
	a, _ := lister.HarvestPages()
	clock.Advance(750 * time.Millisecond)
	b, _ := lister.HarvestPages()
	if len(a) < 200 || len(a) > 300 || len(a)+len(b) != 1000 || !slices.IsSorted(a) || !slices.IsSorted(b) {
		t.Fatalf("a quarter epoch gave %d pages, the rest %d", len(a), len(b))
	}
	all := append(slices.Clone(a), b...)
	slices.Sort(all)
	if !slices.Equal(all, pages) {
		t.Fatal("the two harvests are not the epoch's pages, each once")
	}
	// Many harvests within an epoch (past the first few, they take
	// stretches of the epoch in the order written).
	w2, err := NewTrace("t", trace.Meta{MemoryBytes: 4096 * 4096, PageSize: 4096, Epoch: time.Second},
		[]trace.Epoch{{Index: 0}, {Index: 1, Pages: pages}, {Index: 2}})
	if err != nil {
		t.Fatal(err)
	}
	lister = pageLister(t, w2, clock)
	all = nil
	for range 40 {
		clock.Advance(50 * time.Millisecond)
		got, _ := lister.HarvestPages()
		if !slices.IsSorted(got) {
			t.Fatal("a harvest not ascending")
		}
		all = append(all, got...)
	}
	slices.Sort(all)
	if !slices.Equal(all, pages) {
		t.Fatalf("40 harvests gave %d pages, want the epoch's %d, each once", len(all), len(pages))
	}
}

// TestChoose: auto picks the mode its predictions favour under each
// preference, within the downtime limit where a mode keeps to it.
func TestChoose(t *testing.T) {
	w, err := ParseSynthetic("hotset:hot=4000,p=0.95,rate=20000", 1<<15, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Workload: w, Bandwidth: 32 << 20, DowntimeLimit: 100 * time.Millisecond, MaxRounds: 10}
	for _, prefer := range []string{PreferTime, PreferBytes, PreferDowntime} {
		c, err := Choose(context.Background(), o, Window(w, 0, 20), prefer)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Predictions) != len(AutoModes) || c.Predicted().Mode != c.Mode || !strings.Contains(c.Why, "within the 100ms limit") {
			t.Fatalf("%s: chose %q (%s) from %d predictions", prefer, c.Mode, c.Why, len(c.Predictions))
		}
		if n := strings.Count(c.Why, "downtime"); n != 1 {
			t.Errorf("%s: why %q names the downtime %d times, want once", prefer, c.Why, n) // walk 104: "(18ms), downtime 18ms"
		}
		for _, r := range c.Predictions {
			within := r.Info.Downtime <= 100
			better := Merit(r, prefer) < Merit(c.Predicted(), prefer)
			if prefer == PreferDowntime {
				// Downtimes within downtimeTie of the least are alike.
				least := c.Predictions[leastDowntime(c.Predictions, o.DowntimeLimit)].Info.Downtime
				better = c.Predicted().Info.Downtime > least+downtimeTolerance(least) ||
					r.Info.Downtime <= least+downtimeTolerance(least) && r.Info.TotalTime < c.Predicted().Info.TotalTime
			}
			if within && better {
				t.Errorf("%s: chose %s, but %s was predicted better within the limit", prefer, c.Mode, r.Mode)
			}
		}
		// Pre-copy runs into the round cap on this hot set: never the
		// choice.
		if c.Mode == "precopy" || c.Mode == "predictive" {
			t.Errorf("%s: chose %s, which cannot keep the downtime limit here", prefer, c.Mode)
		}
	}
	if _, err := Choose(context.Background(), o, w, "speed"); err == nil {
		t.Fatal("prefer speed accepted")
	}
	// The choice says what it costs the guest where it slows it.
	slowed := Result{Mode: "tsmc", Info: migrator.Info{TotalTime: 1000, Downtime: 2, RAM: &migrator.RAMStats{},
		Pagecast: &migrator.Extra{Slowdown: migrator.Slowdown{VCPUs: 1, FaultTime: 200}}}}
	if c, err := ChooseFrom([]Result{slowed}, o, PreferTime); err != nil || !strings.HasSuffix(c.Why, "; it slows the guest by 20% of its vCPU time while it runs (post-copy's faults)") {
		t.Errorf("why %q (%v)", c.Why, err)
	}
	// query-migrate's report says the page rate the predictions were
	// bound by, where there was one.
	o.PageRate = 50000
	c, err := ChooseFrom([]Result{{Mode: "mecom", Info: migrator.Info{TotalTime: 900, Downtime: 90, RAM: &migrator.RAMStats{}}}}, o, PreferTime)
	if err != nil {
		t.Fatal(err)
	}
	if js, _ := json.Marshal(c.Report()); !strings.Contains(string(js), `"page-rate":50000`) {
		t.Errorf("report %s lacks the page rate", js)
	}
	if got := Window(idle(16, 10), 8, 4); got.Len() != 4 || len(got.Dirty(nil, 3)) != 0 {
		t.Fatal("window")
	}
}

// TestNearTie: a choice by less than nearTie over the next mode says it
// is a near tie, and which; one by more, or over the chosen mode's own
// +postcopy twin, or over a mode past the downtime limit, does not.
func TestNearTie(t *testing.T) {
	res := func(mode string, total, downtime int64) Result {
		return Result{Mode: mode, Info: migrator.Info{TotalTime: total, Downtime: downtime, RAM: &migrator.RAMStats{}}}
	}
	o := Options{DowntimeLimit: 300 * time.Millisecond}
	for _, tc := range []struct {
		rs   []Result
		want string // the why's end; "" for no near tie
	}{
		{[]Result{res("mecom", 453, 90), res("predictive+mecom", 456, 90), res("precopy", 900, 90)},
			"; a near tie: predictive+mecom was predicted 456ms (0.7% more), closer than predictions come true"},
		{[]Result{res("mecom", 453, 90), res("throttle", 453, 90)}, "; a near tie: throttle was predicted 453ms (the same), closer than predictions come true"},
		{[]Result{res("mecom", 453, 90), res("predictive+mecom", 500, 90)}, ""},
		{[]Result{res("mecom", 453, 90), res("mecom+postcopy", 455, 90), res("precopy", 900, 90)}, ""},
		{[]Result{res("mecom", 453, 90), res("predictive", 455, 400)}, ""},
	} {
		c, err := ChooseFrom(tc.rs, o, PreferTime)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(c.Why, "near tie"); got != (tc.want != "") || tc.want != "" && !strings.HasSuffix(c.Why, tc.want) {
			t.Errorf("%s among %d: why %q, want it to end %q", c.Mode, len(tc.rs), c.Why, tc.want)
		}
	}
}

// TestPickTies: modes whose figure by the preference ties are told apart
// by total time, then bytes (the helper's live case: tsmc and tsmc+mecom
// both predicted 2 ms of downtime, 741 and 380 ms in all).
func TestPickTies(t *testing.T) {
	r := func(mode string, total, down int64, bytes uint64) Result {
		return Result{Mode: mode, Info: migrator.Info{TotalTime: total, Downtime: down, RAM: &migrator.RAMStats{Transferred: bytes}}}
	}
	for _, tc := range []struct {
		prefer string
		rs     []Result
		want   string
	}{
		{PreferDowntime, []Result{r("tsmc", 741, 2, 74<<20), r("tsmc+mecom", 380, 2, 36<<20)}, "tsmc+mecom"},
		{PreferDowntime, []Result{r("tsmc", 380, 2, 74<<20), r("tsmc+mecom", 380, 2, 36<<20)}, "tsmc+mecom"},
		{PreferTime, []Result{r("a", 500, 90, 10<<20), r("b", 500, 90, 9<<20)}, "b"},
		{PreferBytes, []Result{r("a", 600, 90, 9<<20), r("b", 500, 200, 9<<20)}, "b"},
		// Downtimes within 5 ms of the least are alike, the quicker
		// taken (walk 139: tsmc's 9 ms and 21.3 s taken over
		// tsmc+mecom's 10 ms and 7.7 s); farther, the least.
		{PreferDowntime, []Result{r("a", 900, 1, 74<<20), r("b", 380, 2, 36<<20)}, "b"},
		{PreferDowntime, []Result{r("tsmc", 21285, 9, 600<<20), r("tsmc+mecom", 7551, 10, 200<<20), r("mecom", 5000, 15, 190<<20)}, "tsmc+mecom"},
		{PreferDowntime, []Result{r("a", 900, 1, 74<<20), r("b", 380, 7, 36<<20)}, "a"},
		{PreferDowntime, []Result{r("a", 900, 200, 74<<20), r("b", 380, 209, 36<<20), r("c", 300, 211, 36<<20)}, "b"},
		// None within the limit: the nearest it, whatever the preference
		// (walk 130: 2.9 s chosen over 1.3 s for 4.5% fewer bytes).
		{PreferBytes, []Result{r("throttle", 89000, 1313, 2790<<20), r("predictive+mecom", 105000, 2917, 2670<<20)}, "throttle"},
		{PreferTime, []Result{r("throttle", 6000, 20+300, 146<<20), r("predictive+mecom", 3200, 154+300, 82<<20)}, "throttle"},
		{PreferTime, []Result{r("a", 600, 400, 9<<20), r("b", 500, 400, 9<<20)}, "b"},
	} {
		i, _ := pick(tc.rs, tc.prefer, 300*time.Millisecond)
		if got := tc.rs[i].Mode; got != tc.want {
			t.Errorf("prefer %s among %v: picked %s, want %s", tc.prefer, tc.rs, got, tc.want)
		}
	}
}

// predicted is a mode's prediction of total and down ms, 1 GiB sent, for
// the tests of auto's why.
func predicted(mode string, total, down int64) Result {
	return Result{Mode: mode, Info: migrator.Info{TotalTime: total, Downtime: down, RAM: &migrator.RAMStats{Transferred: 1 << 30},
		Pagecast: &migrator.Extra{}}}
}

// TestChooseDowntimeAlike: with --prefer downtime, a mode predicted within
// downtimeTie of the least downtime and quicker is taken, and the why
// says so (walk 139: tsmc's 9 ms and 21.3 s over tsmc+mecom's 10 ms and
// 7.7 s).
func TestChooseDowntimeAlike(t *testing.T) {
	r := predicted
	c, err := ChooseFrom([]Result{r("tsmc", 21285, 9), r("tsmc+mecom", 7551, 10), r("mecom", 5000, 40)}, Options{}, PreferDowntime)
	if err != nil {
		t.Fatal(err)
	}
	want := "the shortest total time predicted (7.551s) among the modes within 5ms of the least downtime, tsmc's 9ms: 10ms, within the 300ms limit"
	if c.Mode != "tsmc+mecom" || c.Why != want {
		t.Errorf("chose %s: %q, want tsmc+mecom: %q", c.Mode, c.Why, want)
	}
}

// TestChooseWithinLimitSays: a mode chosen within the downtime limit over
// a better one beyond it is not called the best without saying so (walk
// 144: "the shortest total time predicted (28.865s)" beside 18.546s).
func TestChooseWithinLimitSays(t *testing.T) {
	r := predicted
	c, err := ChooseFrom([]Result{r("throttle", 28865, 177), r("predictive+mecom", 18546, 1178)}, Options{}, PreferTime)
	want := "the shortest total time predicted among the modes within the 300ms downtime limit (28.865s), downtime 177ms"
	if err != nil || c.Mode != "throttle" || c.Why != want {
		t.Errorf("chose %s (%v): %q, want throttle: %q", c.Mode, err, c.Why, want)
	}
	c, err = ChooseFrom([]Result{r("throttle", 28865, 177), r("predictive+mecom", 38546, 1178)}, Options{}, PreferTime)
	want = "the shortest total time predicted (28.865s), downtime 177ms within the 300ms limit"
	if err != nil || c.Mode != "throttle" || c.Why != want {
		t.Errorf("chose %s (%v): %q, want throttle: %q", c.Mode, err, c.Why, want)
	}
}

// TestChooseNoneWithinLimitSays: where no mode keeps within the downtime
// limit, the why says the choice was by downtime and names the mode best
// by the preference; a better mode is never called a near tie (walk 131:
// "the shortest total time predicted (56.443s) … a near tie: mecom was
// predicted 29.968s (the same)").
func TestChooseNoneWithinLimitSays(t *testing.T) {
	r := predicted
	c, err := ChooseFrom([]Result{r("precopy", 80000, 1993), r("throttle", 56443, 642), r("mecom", 29968, 695)}, Options{}, PreferTime)
	if err != nil {
		t.Fatal(err)
	}
	want := "the downtime nearest the 300ms limit predicted (642ms): no mode was predicted to keep within it; its total time 56.443s; mecom was predicted 29.968s (47% less), with 695ms of downtime"
	if c.Mode != "throttle" || c.Why != want {
		t.Errorf("chose %s: %q, want throttle: %q", c.Mode, c.Why, want)
	}
	for _, bad := range []string{"shortest total time", "near tie", "the same"} {
		if strings.Contains(c.Why, bad) {
			t.Errorf("why says %q: %s", bad, c.Why)
		}
	}
}

// TestChooseFrontWorstPoint: a guest sweeping its memory at about the pace
// the link sends it is weighed at three points of the sweep, and the mode
// chosen is the best at its worst point, the predictions shown those at
// the point reckoned (walk 131: mecom chosen at 12.6 s took 53.6 s, where
// throttle took 30 s). At this start mecom is best where the sweep is
// reckoned to be, 10.1 s, and over the limit at another point.
func TestChooseFrontWorstPoint(t *testing.T) {
	if raceDetector {
		t.Skip("MECOM's coding is charged at the time it takes, which the race detector slows: mecom's 10 s became 23 s (make test runs it without)")
	}
	w, err := ParseSynthetic("sweep:rate=47000", 1<<18, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	mix, err := ParseMix("zero=0.03,repeat=0.57,text=0.2,random=0.2")
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Workload: w, Bandwidth: 64 << 20, Start: 21, Content: mix}
	c, err := ChooseAmong(context.Background(), o, Window(w, 1, 20), PreferTime, []string{"precopy", "throttle", "mecom"})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(c.Why)
	// The range of a mode left out for its downtime says so (walk 132).
	if c.Mode != "throttle" || !strings.Contains(c.Why, "at the worst of 4 points") || !strings.Contains(c.Why, "mecom, the best at the point reckoned") ||
		!regexp.MustCompile(`mecom [0-9.]+s to [0-9.]+s \(its downtime over the limit at a point\)`).MatchString(c.Why) {
		t.Errorf("chose %s: %s; want throttle, the best at its worst point", c.Mode, c.Why)
	}
	// mecom as predicted where the sweep was reckoned to be, alone (its
	// coding is charged at the time it takes, so compared in one run).
	p := o
	p.Workload, p.Start, p.Grow = Window(w, 1, 20), 0, true
	alone := Run(context.Background(), p, "mecom")
	for _, r := range c.Predictions {
		if r.Mode == "mecom" && (r.Err != nil || alone.Err != nil || math.Abs(float64(r.Info.TotalTime-alone.Info.TotalTime)) > 0.1*float64(alone.Info.TotalTime)) {
			t.Errorf("mecom shown: %v, %d ms; alone where the sweep was reckoned to be: %v, %d ms", r.Err, r.Info.TotalTime, alone.Err, alone.Info.TotalTime)
		}
	}
	outcome := Run(context.Background(), o, c.Mode)
	if p, a := float64(c.Predicted().Info.TotalTime), float64(outcome.Info.TotalTime); outcome.Err != nil || math.Abs(p-a) > 0.05*a {
		t.Errorf("%s predicted %.1f s against %.1f s (%v)", c.Mode, p/1e3, a/1e3, outcome.Err)
	}
	// Predicted again from where the sweep is 2 s on (a live auto's
	// predictions took that long): as the migration starting then goes.
	p.Lead = 2 * time.Second
	if c.Again {
		t.Error("a choice said to be predicted again before Repredict")
	}
	if err := Repredict(context.Background(), p, &c); err != nil {
		t.Fatal(err)
	}
	if !c.Again {
		t.Error("Repredict did not say the choice was predicted again (migrate says which row is)")
	}
	later := o
	later.Start += 20
	outcome = Run(context.Background(), later, c.Mode)
	if p, a := float64(c.Predicted().Info.TotalTime), float64(outcome.Info.TotalTime); outcome.Err != nil || math.Abs(p-a) > 0.05*a || c.Predicted().Lead < 90000 {
		t.Errorf("%s predicted again 2 s on, the front %.0f pages on: %.1f s against %.1f s from epoch %d (%v)", c.Mode, c.Predicted().Lead, p/1e3, a/1e3, later.Start, outcome.Err)
	}
	if again := fmt.Sprintf("; predicted again from where the sweep was once the modes were weighed: %v", time.Duration(c.Predicted().Info.TotalTime)*time.Millisecond); !strings.Contains(c.Why, again) {
		t.Errorf("why %q, want it to end %q", c.Why, again)
	}
}

// TestKnifeEdge: a mode whose predictions at a sweep's points lie more
// than knifeEdge apart is passed over for a steady one, even where its
// worst point is better, and bounds no other mode meanwhile; where no
// steady mode finished, the best worst point stands.
func TestKnifeEdge(t *testing.T) {
	mecom := frontSpan{least: 6500, worst: 19000, finished: true}
	throttle := frontSpan{least: 30600, worst: 33800, finished: true}
	precopy := frontSpan{worst: 39000, cut: true}
	for _, tc := range []struct {
		name         string
		spans        []frontSpan
		best, passed int
	}{
		{"edgy passed", []frontSpan{precopy, throttle, mecom}, 1, 2},
		{"steady enough", []frontSpan{precopy, throttle, {least: 12000, worst: 20400, finished: true}}, 2, -1},
		{"no steady one", []frontSpan{precopy, {least: 10000, worst: 40000, finished: true}, mecom}, 2, -1},
		{"none finished", []frontSpan{precopy}, -1, -1},
	} {
		if best, passed := pickSpan(tc.spans); best != tc.best || passed != tc.passed {
			t.Errorf("%s: chose %d passing %d, want %d passing %d", tc.name, best, passed, tc.best, tc.passed)
		}
	}
	b := newSharedBound(4)
	for _, m := range []float64{6500, 9000, 12000, 19000} {
		b.finish("mecom", m, true)
	}
	if v, by := b.get(); !math.IsInf(v, 1) {
		t.Errorf("mecom 6.5 to 19 s bounds the others at %v (%s)", v, by)
	}
	b.fewer["throttle"] = true // it does not code: not run at the dear point
	for _, m := range []float64{30600, 31000, 33800} {
		b.finish("throttle", m, true)
	}
	if v, by := b.get(); v != 33800 || by != "throttle" {
		t.Errorf("bound %v by %s, want throttle's worst, 33800", v, by)
	}
	one := newSharedBound(1)
	one.finish("mecom", 6500, true)
	if v, _ := one.get(); v != 6500 {
		t.Errorf("one point: bound %v, want 6500", v)
	}
}

// TestChooseFrontKnifeEdge: a 1 GiB guest sweeping 43 500 pages a second
// at 64 MiB/s, mecom predicted 6.5-19 s by where the sweep stands (live it
// took 15 s to 2m52s), throttle 31-34 s: throttle is chosen, and the why
// says why. Swept at 12 800 pages a second at 32 MiB/s, where mecom is
// predicted 12-20 s and came within 6% live, mecom stays.
func TestChooseFrontKnifeEdge(t *testing.T) {
	if raceDetector {
		t.Skip("MECOM's coding is charged at the time it takes, which the race detector slows (make test runs it without)")
	}
	for _, tc := range []struct {
		sweep, mix string
		bandwidth  uint64
		want       string
		edge       bool
	}{
		{"sweep:rate=43500", "zero=0.01,repeat=0.59,text=0.2,random=0.2", 64 << 20, "throttle", true},
		{"sweep:rate=12800", "zero=0.26,repeat=0.34,text=0.2,random=0.2", 32 << 20, "mecom", false},
	} {
		w, err := ParseSynthetic(tc.sweep, 1<<18, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		mix, err := ParseMix(tc.mix)
		if err != nil {
			t.Fatal(err)
		}
		o := Options{Workload: w, Bandwidth: tc.bandwidth, Start: 21, Content: mix}
		c, err := ChooseAmong(context.Background(), o, Window(w, 1, 20), PreferTime, []string{"precopy", "throttle", "mecom"})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s: %s", tc.sweep, c.Mode, c.Why)
		// Not "the shortest" beside a mode said to be better (walk 132).
		if c.Mode != tc.want || strings.Contains(c.Why, "knife's edge") != tc.edge || strings.Contains(c.Why, "at the worst of 4 points among the steady modes") != tc.edge {
			t.Errorf("%s at %d MiB/s: chose %s: %s; want %s, knife's edge said: %v", tc.sweep, tc.bandwidth>>20, c.Mode, c.Why, tc.want, tc.edge)
		}
	}
}

// TestRegret: the choice is judged by the preference's figure against the
// best, and a choice that broke the downtime limit where another mode kept
// within it is infinitely worse.
func TestRegret(t *testing.T) {
	r := func(mode string, total, down int64) Result {
		return Result{Mode: mode, Info: migrator.Info{TotalTime: total, Downtime: down}}
	}
	for _, tc := range []struct {
		name         string
		chosen, best Result
		want         float64
	}{
		{"best", r("mecom", 1000, 100), r("mecom", 1000, 100), 0},
		{"slower", r("precopy", 1150, 100), r("mecom", 1000, 100), 0.15},
		{"over the limit", r("precopy", 900, 400), r("mecom", 1000, 100), math.Inf(1)},
		{"all over the limit", r("precopy", 1200, 400), r("mecom", 1000, 500), 0.2},
	} {
		h := Hindsight{Chosen: tc.chosen, Best: tc.best, Limit: 300 * time.Millisecond}
		if got := h.Regret(PreferTime); math.Abs(got-tc.want) > 1e-9 && got != tc.want {
			t.Errorf("%s: regret %v, want %v", tc.name, got, tc.want)
		}
	}
	// By downtime, which is under a millisecond (0 as Info counts it) on
	// a fast link: 0/0 was NaN ("NaN% over the best", and simulate --json
	// failed), 1 ms against 0 +Inf ("broke the limit").
	for _, tc := range []struct {
		name         string
		chosen, best Result
		want         float64
		verdict      string
	}{
		{"both 0", r("mecom+postcopy", 50, 0), r("mecom", 40, 0), 0, "auto chose the best mode by downtime (tied with mecom)"},
		{"1 against 0", r("precopy", 50, 1), r("mecom", 40, 0), 1, "auto's choice was 100.0% over the best by downtime, mecom"},
	} {
		h := Hindsight{Chosen: tc.chosen, Best: tc.best, Limit: 300 * time.Millisecond}
		if got := h.Regret(PreferDowntime); got != tc.want {
			t.Errorf("%s: regret by downtime %v, want %v", tc.name, got, tc.want)
		}
		if got := h.Verdict(Choice{Mode: tc.chosen.Mode, Prefer: PreferDowntime}); got != tc.verdict {
			t.Errorf("%s: verdict %q, want %q", tc.name, got, tc.verdict)
		}
	}
}

// TestWithFallback: auto takes MODE+postcopy over MODE where the two are
// predicted alike, and only then.
func TestWithFallback(t *testing.T) {
	r := func(mode string, total, down int64) Result {
		return Result{Mode: mode, Info: migrator.Info{TotalTime: total, Downtime: down}}
	}
	limit := 300 * time.Millisecond
	for _, tc := range []struct {
		name string
		rs   []Result
		want string
	}{
		{"alike", []Result{r("mecom", 1000, 100), r("mecom+postcopy", 1010, 100)}, "mecom+postcopy"},
		{"slower", []Result{r("mecom", 1000, 100), r("mecom+postcopy", 1100, 100)}, "mecom"},
		{"over the limit", []Result{r("mecom", 1000, 100), r("mecom+postcopy", 1000, 400)}, "mecom"},
		{"other mode", []Result{r("mecom", 1000, 100), r("precopy+postcopy", 1000, 100)}, "mecom"},
		{"faster", []Result{r("predictive", 1000, 100), r("predictive+postcopy", 800, 30)}, "predictive+postcopy"},
	} {
		best, _, _ := choose(tc.rs, PreferTime, limit)
		if got := tc.rs[best].Mode; got != tc.want {
			t.Errorf("%s: chose %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestVerdict(t *testing.T) {
	r := func(mode string, total, down int64) Result {
		return Result{Mode: mode, Info: migrator.Info{TotalTime: total, Downtime: down}}
	}
	c := Choice{Mode: "mecom+postcopy", Prefer: PreferTime}
	for _, tc := range []struct {
		chosen, best Result
		want         string
	}{
		{r("mecom+postcopy", 1000, 100), r("mecom+postcopy", 1000, 100), "auto chose the best mode by total time"},
		{r("mecom+postcopy", 1000, 100), r("mecom", 1000, 100), "auto chose the best mode by total time (tied with mecom)"},
		{r("mecom+postcopy", 1150, 100), r("mecom", 1000, 100), "auto's choice was 15.0% over the best by total time, mecom"},
		{r("mecom+postcopy", 100040, 100), r("mecom", 100000, 100), "auto chose the best mode by total time (tied with mecom, within 0.05%)"}, // walk 157: "0.0% over"
		{r("mecom+postcopy", 100050, 100), r("mecom", 100000, 100), "auto's choice was 0.1% over the best by total time, mecom"},
		{r("mecom+postcopy", 900, 400), r("mecom", 1000, 100), "auto's choice broke the 300ms downtime limit; mecom kept within it"},
	} {
		h := Hindsight{Chosen: tc.chosen, Best: tc.best, Limit: 300 * time.Millisecond}
		if got := h.Verdict(c); got != tc.want {
			t.Errorf("verdict %q, want %q", got, tc.want)
		}
	}
}

// Progress hears of every point of the timeline as it is sampled, in
// order, but the last (the end, added after the migration).
func TestRunProgress(t *testing.T) {
	w := idle(4096, 10)
	var heard []Point
	r := Run(context.Background(), Options{Workload: w, Bandwidth: 1 << 20, Progress: func(_ string, p Point) { heard = append(heard, p) }}, "precopy")
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if len(r.Timeline) < 3 || !slices.Equal(heard, r.Timeline[:len(r.Timeline)-1]) {
		t.Fatalf("heard %d points, the timeline has %d:\n%v\n%v", len(heard), len(r.Timeline), heard, r.Timeline)
	}
}

// phases is a 64 MiB guest's trace of 200 epochs that rewrites pages [0,
// first) every epoch up to epoch switchAt, and [0, then) after.
func phases(t *testing.T, epoch time.Duration, first, then uint64, switchAt int) *Trace {
	t.Helper()
	epochs := make([]trace.Epoch, 200)
	for i := range epochs {
		n := first
		if i >= switchAt {
			n = then
		}
		epochs[i].Index = uint64(i)
		for p := range n {
			epochs[i].Pages = append(epochs[i].Pages, p)
		}
	}
	w, err := NewTrace("phases", trace.Meta{MemoryBytes: 64 << 20, PageSize: 4096, Epoch: epoch}, epochs)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestSwitchoverCounted: what must fit the downtime limit is what the
// switch-over sends, the guest's state included, and compressed pages at
// their coded size.
func TestSwitchoverCounted(t *testing.T) {
	// The link moves 0.9 × 16 MiB/s × 300 ms = 4.32 MiB within the
	// limit. A 1000-page hot set (3.9 MiB) fits alone, not with 2 MiB of
	// state: the engine must wait until the guest writes only 200 pages
	// (from epoch 60) and stop once the pages pending fit with the state
	// (231 ms measured), not stop at once with 3.9 MiB and the state
	// (369 ms, the code before).
	o := Options{Workload: phases(t, 100*time.Millisecond, 1000, 200, 60), Bandwidth: 16 << 20, StateBytes: 2 << 20}
	r := Run(context.Background(), o, "precopy")
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	t.Logf("2 MiB of state: downtime %d ms, rounds %v, %s", r.Info.Downtime, r.Info.Pagecast.RoundPages, r.Info.Pagecast.StopReason)
	if r.Info.Downtime > 300 || !strings.Contains(r.Info.Pagecast.StopReason, "fit the downtime limit") {
		t.Errorf("2 MiB of state: downtime %d ms (limit 300), stopped: %s", r.Info.Downtime, r.Info.Pagecast.StopReason)
	}

	// At 4 MiB/s the limit takes 1.08 MiB, the 300 KiB of state
	// included. A 1500-page hot set (5.9 MiB) rewritten every 10 ms does
	// not fit uncompressed; of repeated words, MECOM codes it to a small
	// share of that, and it fits. (The rest of memory is random bytes,
	// which it cannot compress: the share is measured on the pages a
	// round sent.)
	o = Options{Workload: phases(t, 10*time.Millisecond, 1500, 1500, 200), Bandwidth: 4 << 20, MaxRounds: 10,
		Content: Mix{0, 0, 0, 1}, Written: Mix{0, 1, 0, 0}}
	r = Run(context.Background(), o, "mecom")
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	t.Logf("mecom: downtime %d ms, %d bytes, rounds %v, %s", r.Info.Downtime, r.Info.RAM.Transferred, r.Info.Pagecast.RoundPages, r.Info.Pagecast.StopReason)
	if r.Info.Pagecast.Round >= 10 || r.Info.Downtime > 300 {
		t.Errorf("mecom on a compressible hot set: %d rounds (cap 10), downtime %d ms, stopped: %s", r.Info.Pagecast.Round, r.Info.Downtime, r.Info.Pagecast.StopReason)
	}
}

// A compressed migration stops only once what is pending fits the downtime
// limit as the pending pages will code, not as the round's pages did. Here
// memory is repeated words, which code to a few percent of their size, and
// the pages the guest writes random bytes, which do not code: going by
// round 1's pages, the hot set seemed to fit, and the stop-and-copy broke
// the limit.
func TestMECOMPendingShare(t *testing.T) {
	w, err := ParseSynthetic("hotset:hot=4000,p=0.95,rate=20000", 1<<15, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	content, err := ParseMix("repeat=1")
	if err != nil {
		t.Fatal(err)
	}
	written, err := ParseMix("random=1")
	if err != nil {
		t.Fatal(err)
	}
	const limit = 300 * time.Millisecond
	o := Options{Workload: w, Bandwidth: 32 << 20, DowntimeLimit: limit, MaxRounds: 8, Content: content, Written: written}
	for _, mode := range []string{migrator.MECOM, migrator.ModePredictive + "+" + migrator.MECOM} {
		r := Run(context.Background(), o, mode)
		if r.Err != nil {
			t.Fatalf("%s: %v", mode, r.Err)
		}
		reason, downtime := r.Info.Pagecast.StopReason, time.Duration(r.Info.Downtime)*time.Millisecond
		t.Logf("%s: %d rounds, downtime %v, stopped because %s", mode, r.Info.Pagecast.Round, downtime, reason)
		if strings.Contains(reason, "fit the downtime limit") && downtime > limit*11/10 {
			t.Errorf("%s: stopped because %s, then took %v of downtime against the %v limit", mode, reason, downtime, limit)
		}
	}
}

// TestCodedStop: with compression, the stop at a harvest judges the pages
// pending by how they code then, not by the share measured as the round
// began. Here the guest writes 8000 pages of text through round 1, then
// turns to 400 pages of random bytes: the pending text the rounds set out
// with coded to a fraction of its size, and going by that the engine
// stopped in round 4 with 820 pages pending, the random ones among them,
// and 317 ms of downtime against 300 (now: 225 ms, 385 pages).
func TestCodedStop(t *testing.T) {
	const pages = 1 << 14 // 64 MiB of random bytes: round 1 takes 8 s at 8 MiB/s
	var epochs []trace.Epoch
	classes := map[uint64]mecom.Class{}
	for e := range 200 {
		var dirty []uint64
		lo, hi := uint64(0), uint64(8000) // text, through round 1
		if e >= 80 {
			lo, hi = 8000, 8400 // then random bytes
		}
		for p := lo; p < hi; p++ {
			dirty = append(dirty, p)
			classes[p] = mecom.LowEntropy
			if p >= 8000 {
				classes[p] = mecom.HighEntropy
			}
		}
		epochs = append(epochs, trace.Epoch{Index: uint64(e), Pages: dirty})
	}
	w, err := NewTrace("phases", trace.Meta{MemoryBytes: pages * 4096, PageSize: 4096, Epoch: 100 * time.Millisecond}, epochs)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Workload: w, Bandwidth: 8 << 20, Content: Mix{0, 0, 0, 1}, Classes: classes}
	r := Run(context.Background(), o, "mecom")
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	i := r.Info
	t.Logf("%d rounds, %d ms of downtime, %s", len(i.Pagecast.RoundPages), i.Downtime, i.Pagecast.StopReason)
	if i.Downtime > 300 {
		t.Errorf("downtime %d ms against a limit of 300 (%s)", i.Downtime, i.Pagecast.StopReason)
	}
}

// TestStopBeforeObserve: a stop decided at a harvest pauses the guest with
// the pages that harvest left pending, however long the predictor takes
// to observe it: the engine decides before it tells the policy, and does
// not tell it when it stops. With the predictor's own time charged
// (Options.PolicyTime), the guest used to write on while it observed the
// last harvest (a 2 GiB guest with a hot set of 20 000 pages: 8 545
// pending at the stop, 11 261 sent paused, 350 ms against 300).
func TestStopBeforeObserve(t *testing.T) {
	if raceDetector {
		// A CI run on 2026-12-03, under it and beside other packages'
		// QEMUs: the predictor's time charged kept the rounds from
		// closing, and the round cap came first.
		t.Skip("charges the predictor's own CPU time, which the race detector distorts; make test runs it without")
	}
	w, err := ParseSynthetic("hotset:hot=20000,p=0.9,rate=30k", 1<<17, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	r := Run(context.Background(), Options{Workload: w, Bandwidth: 128 << 20, PolicyTime: true}, "predictive")
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	i := r.Info
	var pending uint64
	if _, err := fmt.Sscanf(i.Pagecast.StopReason, "%d bytes pending fit", &pending); err != nil {
		t.Fatalf("stopped because %q: want a stop at a harvest that fit the limit", i.Pagecast.StopReason)
	}
	paused := i.Pagecast.RoundPages[len(i.Pagecast.RoundPages)-1]
	t.Logf("%s; %d pages sent paused, %d ms of downtime", i.Pagecast.StopReason, paused, i.Downtime)
	if paused*migrator.PageSize != pending {
		t.Errorf("%d pages pending at the stop, %d sent paused", pending/migrator.PageSize, paused)
	}
}

// TestChooseStopsLosers: on a guest whose pre-copy does not converge,
// auto stops the simulations that can no longer win, and chooses as it
// would have with every one run to its end; the mode Judge must report
// runs to its end whatever it costs.
func TestChooseStopsLosers(t *testing.T) {
	w, err := ParseSynthetic("hotset:hot=1024,p=0.7,rate=4k", 1<<12, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Workload: w, Bandwidth: 2 << 20, MaxRounds: 10}
	for _, prefer := range []string{PreferTime, PreferBytes} {
		c, err := Choose(context.Background(), o, w, prefer)
		if err != nil {
			t.Fatal(err)
		}
		whole, err := ChooseFrom(RunAll(context.Background(), o, AutoModes), o, prefer)
		if err != nil {
			t.Fatal(err)
		}
		if c.Mode != whole.Mode || c.Why != whole.Why {
			t.Errorf("%s: chose %s (%s), with every mode run to its end %s (%s)", prefer, c.Mode, c.Why, whole.Mode, whole.Why)
		}
		stopped := 0
		for i, r := range c.Predictions {
			var cut *CutShort
			if !errors.As(r.Err, &cut) {
				continue
			}
			stopped++
			full := whole.Predictions[i]
			if Merit(full, prefer) <= (1+alike)*Merit(whole.Predicted(), prefer) {
				t.Errorf("%s: %s stopped (%v), but it ends within %.0f%% of the best", prefer, r.Mode, r.Err, 100*alike)
			}
			if cut.At.Milliseconds() > full.Info.TotalTime || cut.Sent > full.Info.RAM.Transferred {
				t.Errorf("%s: %s stopped after %v and %d bytes, past its end (%d ms, %d bytes)", prefer, r.Mode, cut.At, cut.Sent, full.Info.TotalTime, full.Info.RAM.Transferred)
			}
		}
		if stopped == 0 {
			t.Errorf("%s: no simulation stopped short, where precopy runs %d ms against the best's %d", prefer,
				whole.Predictions[0].Info.TotalTime, whole.Predicted().Info.TotalTime)
		}
		if r := c.Report(); len(r.Predictions) != len(AutoModes) {
			t.Errorf("%s: query-migrate reports %d predictions, want every mode's", prefer, len(r.Predictions))
		}
		t.Logf("%s: chose %s, %d of %d simulations stopped short", prefer, c.Mode, stopped, len(AutoModes))
		// Judging the choice runs the chosen mode to its end, even the
		// worst.
		worst := Choice{Mode: "precopy", Prefer: prefer, Predictions: c.Predictions}
		h, err := Judge(context.Background(), o, worst)
		if err != nil {
			t.Fatal(err)
		}
		if h.Chosen.Err != nil || h.Chosen.Info.Status != migrator.StatusCompleted || h.Best.Mode != whole.Mode && Merit(h.Best, prefer) > Merit(whole.Predicted(), prefer) {
			t.Errorf("%s: judged precopy %v (%s), best %s", prefer, h.Chosen.Err, h.Chosen.Info.Status, h.Best.Mode)
		}
	}
}

// TestWrittenZeros: a guest that writes zeros (tmpfs filled from
// /dev/zero, init_on_free) writes pages a migration sends as zero runs,
// whether the written mix or a page's known class says so; until
// 2026-12-03 a written page was never zero here, and auto predicted such
// a Linux guest at 2-5 times its bytes.
func TestWrittenZeros(t *testing.T) {
	w, err := ParseSynthetic("hotset:hot=4000,p=0.95,rate=20000", 1<<14, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	run := func(o Options) Result {
		t.Helper()
		o.Workload, o.Bandwidth, o.MaxRounds = w, 16<<20, 8
		r := Run(context.Background(), o, migrator.ModePrecopy)
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return r
	}
	text := run(Options{Content: Mix{1, 0, 0, 0}, Written: Mix{0, 0, 1, 0}})
	zeros := run(Options{Content: Mix{1, 0, 0, 0}, Written: Mix{1, 0, 0, 0}})
	classes := map[uint64]mecom.Class{}
	for p := range uint64(1 << 14) {
		classes[p] = mecom.Zero
	}
	known := run(Options{Content: Mix{1, 0, 0, 0}, Written: Mix{0, 0, 1, 0}, Classes: classes})
	t.Logf("written text: %d bytes, %v; zeros: %d, %v; known zero: %d, %v", text.Info.RAM.Transferred, text.Info.Pagecast.RoundPages,
		zeros.Info.RAM.Transferred, zeros.Info.Pagecast.RoundPages, known.Info.RAM.Transferred, known.Info.Pagecast.RoundPages)
	for name, r := range map[string]Result{"a written mix of zeros": zeros, "pages known to hold zeros": known} {
		if r.Info.RAM.Transferred*10 > text.Info.RAM.Transferred || r.Info.RAM.Normal > 0 {
			t.Errorf("%s: %d bytes, %d pages whole, against %d bytes where they hold text", name, r.Info.RAM.Transferred, r.Info.RAM.Normal, text.Info.RAM.Transferred)
		}
	}
}

// TestStopReasonCoded: with MECOM the stop reason says what the pending
// bytes come to coded, which is what fits the limit (it said the raw
// bytes alone: 11 710 464 pending "fit" 300 ms at 32 MiB/s).
func TestStopReasonCoded(t *testing.T) {
	// A hot set of 16 MB, 0.5 s at 32 MiB/s as it is, fits 300 ms coded.
	w, err := ParseSynthetic("hotset:hot=4000,p=0.95,rate=20000", 1<<15, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	r := Run(context.Background(), Options{Workload: w, Bandwidth: 32 << 20}, "mecom")
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	var pending, coded uint64
	if _, err := fmt.Sscanf(r.Info.Pagecast.StopReason, "%d bytes pending (about %d coded:", &pending, &coded); err != nil || coded >= pending {
		t.Fatalf("stopped because %q: want the pending bytes and, fewer, what they come to coded", r.Info.Pagecast.StopReason)
	}
	t.Logf("stopped because %s", r.Info.Pagecast.StopReason)
}

// TestPhaseBytesAddUp: every byte a mode sends is in one phase's count, so
// precopy-, downtime-, postcopy- and after-switchover-bytes add up to
// transferred; a pre-copy's checksums, sent after the commit, were in none
// (1044 bytes short on gcc.pct). The rounds' bytes and those after the
// switch-over add up to it too.
func TestPhaseBytesAddUp(t *testing.T) {
	const pages = 1 << 13 // 32 MiB
	w, err := ParseSynthetic("hotset:hot=1000,p=0.9,rate=4000", pages, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Workload: w, Bandwidth: 16 << 20, DowntimeLimit: 100 * time.Millisecond, MaxRounds: 10}
	for _, mode := range AutoModes {
		r := Run(context.Background(), o, mode)
		if r.Err != nil {
			t.Fatal(mode, r.Err)
		}
		ram, x := r.Info.RAM, r.Info.Pagecast
		if sum := ram.PrecopyBytes + ram.DowntimeBytes + ram.PostcopyBytes + x.AfterSwitchoverBytes; sum != ram.Transferred {
			t.Errorf("%s: precopy %d + downtime %d + postcopy %d + after the switch-over %d = %d bytes, transferred %d",
				mode, ram.PrecopyBytes, ram.DowntimeBytes, ram.PostcopyBytes, x.AfterSwitchoverBytes, sum, ram.Transferred)
		}
		// So do the rounds', but for the handshake's and the records
		// between rounds (under 400 bytes here): tsmc's last had stage
		// 3's pages and only the switch-over's bytes (a walk: 43.3 of
		// 65.2 MB), a stop-and-copy's lacked the guest's state.
		var rounds uint64
		for _, b := range x.RoundBytes {
			rounds += b
		}
		if sum := rounds + x.AfterSwitchoverBytes; sum > ram.Transferred || ram.Transferred-sum > 1<<10 {
			t.Errorf("%s: round-bytes %v sum to %d, and %d after the switch-over; transferred %d", mode, x.RoundBytes, rounds, x.AfterSwitchoverBytes, ram.Transferred)
		}
	}
}

// TestWindowPagesHoldData: a guest replaying a window (what was observed
// before a migration) starts with the pages written before the window and
// in it holding data, as the guest migrated then holds them; those written
// after it are still zeros. The window's own were taken for zeros, and a
// steady 101 MiB/s guest's migration predicted 23.9 MiB against 43.8.
func TestWindowPagesHoldData(t *testing.T) {
	w, err := NewTrace("steps", trace.Meta{MemoryBytes: 64 * 4096, PageSize: 4096, Epoch: 100 * time.Millisecond},
		[]trace.Epoch{{Index: 0, Pages: []uint64{1}}, {Index: 1, Pages: []uint64{2}}, {Index: 2, Pages: []uint64{3}}, {Index: 3, Pages: []uint64{4}}})
	if err != nil {
		t.Fatal(err)
	}
	mix, _ := ParseMix("zero=1")
	g, err := NewGuest(Window(w, 1, 2), migrator.NewVirtualClock(time.Unix(0, 0)), GuestOptions{Content: mix})
	if err != nil {
		t.Fatal(err)
	}
	for page, zero := range map[uint64]bool{1: false, 2: false, 3: false, 4: true, 5: true} {
		if got := g.contents.Zero(page); got != zero {
			t.Errorf("page %d zero: %v, want %v", page, got, zero)
		}
	}
}

// TestPageRateAboveLink: a page rate the link never lets the engine
// reach changes nothing, mode by mode: the link sets the pace either way.
// (Before 2026-12-04 a page rate took another timing model: on awk at 64
// MiB/s, pre-copy's downtime was 59 ms without one and 171 ms with 1G.)
func TestPageRateAboveLink(t *testing.T) {
	w, err := ParseSynthetic("hotset:hot=3000,p=0.8,rate=4000", 1<<15, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"precopy", "predictive", "tsmc", "mecom", "throttle"} {
		var got [2]migrator.Info
		for k, rate := range []float64{0, 1e9} {
			r := Run(context.Background(), Options{Workload: w, Bandwidth: 32 << 20, PageRate: rate}, mode)
			if r.Err != nil {
				t.Fatal(mode, r.Err)
			}
			got[k] = r.Info
		}
		a, b := got[0], got[1]
		if a.TotalTime != b.TotalTime || a.Downtime != b.Downtime || a.RAM.Transferred != b.RAM.Transferred || !slices.Equal(a.Pagecast.RoundPages, b.Pagecast.RoundPages) {
			t.Errorf("%s: %d ms, downtime %d ms, %d bytes, rounds %v without a page rate; %d ms, %d ms, %d bytes, %v with 1e9 pages/s",
				mode, a.TotalTime, a.Downtime, a.RAM.Transferred, a.Pagecast.RoundPages, b.TotalTime, b.Downtime, b.RAM.Transferred, b.Pagecast.RoundPages)
		}
	}
}

// TestDirtyRateDistinct: the dirty rate a round reports counts the pages
// it made pending again, each once, as QEMU's dirty-pages-rate counts the
// bits a sync newly sets: a hot set written all through a round is resent
// once. (Counting every harvest's pages, this migration, which converges
// in its second round, reported some 20 000 pages a second, 80 MB/s over
// a 64 MiB/s link.)
func TestDirtyRateDistinct(t *testing.T) {
	w, err := ParseSynthetic("hotset:hot=2000,p=1,rate=20000", 1<<15, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	r := Run(context.Background(), Options{Workload: w, Bandwidth: 64 << 20}, "precopy")
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	i := r.Info
	rate := float64(i.RAM.DirtyPagesRate)
	if rounds := len(i.Pagecast.RoundPages); rounds > 3 || rate == 0 || rate*migrator.PageSize >= 64<<20 || rate > 2000/0.2 {
		t.Errorf("%d rounds %v, dirty rate %.0f pages/s (%.1f MB/s) against a 64 MiB/s link; want the 2000-page hot set made pending again once a round",
			rounds, i.Pagecast.RoundPages, rate, rate*migrator.PageSize/1e6)
	}
}

// TestGrowMovesPagesWrittenOnce: with Grow, each replay of a workload
// writes the pages it wrote more than once where they were, and moves
// those it wrote once, by another offset on each lap; a workload that had
// stopped writing pages new to it by its last fifth moves none, and
// without Grow every lap writes the same pages.
func TestGrowMovesPagesWrittenOnce(t *testing.T) {
	meta := trace.Meta{MemoryBytes: 1 << 20, PageSize: 4096, Epoch: 100 * time.Millisecond}
	growing, err := NewTrace("growing", meta, []trace.Epoch{{Index: 0, Pages: []uint64{1, 2}}, {Index: 1, Pages: []uint64{1, 3}},
		{Index: 2, Pages: []uint64{1, 4}}, {Index: 3, Pages: []uint64{1, 5}}, {Index: 4, Pages: []uint64{1, 6}}})
	if err != nil {
		t.Fatal(err)
	}
	settled, err := NewTrace("settled", meta, []trace.Epoch{{Index: 0, Pages: []uint64{1, 2}}, {Index: 1, Pages: []uint64{1, 3}},
		{Index: 2, Pages: []uint64{1, 4}}, {Index: 3, Pages: []uint64{1, 5}}, {Index: 4, Pages: []uint64{1}}})
	if err != nil {
		t.Fatal(err)
	}
	laps := func(w Workload, grow bool) [][]uint64 {
		g, err := NewGuest(w, migrator.NewVirtualClock(time.Unix(0, 0)), GuestOptions{Grow: grow})
		if err != nil {
			t.Fatal(err)
		}
		var out [][]uint64
		for lap := range uint64(3) {
			var pages []uint64
			for i := range uint64(5) {
				pages = append(pages, g.epochPages(nil, 5*lap+i)...)
			}
			slices.Sort(pages)
			out = append(out, slices.Compact(pages))
		}
		return out
	}
	got := laps(growing, true)
	for lap, pages := range got {
		if !slices.Contains(pages, 1) || len(pages) != 6 {
			t.Errorf("growing, lap %d: pages %v, want page 1 and five others", lap, pages)
		}
		for _, earlier := range got[:lap] {
			if slices.Equal(pages, earlier) {
				t.Errorf("growing, lap %d: the same pages as before: %v", lap, pages)
			}
		}
	}
	// A guest whose writes covered all its memory takes none new: its
	// pages written once stay (walk 130: said to be still taking memory).
	full, err := NewTrace("full", trace.Meta{MemoryBytes: 8 * 4096, PageSize: 4096, Epoch: 100 * time.Millisecond},
		[]trace.Epoch{{Index: 0, Pages: []uint64{0, 1}}, {Index: 1, Pages: []uint64{0, 2}}, {Index: 2, Pages: []uint64{0, 3}},
			{Index: 3, Pages: []uint64{0, 4}}, {Index: 4, Pages: []uint64{0, 5, 6, 7}}})
	if err != nil {
		t.Fatal(err)
	}
	for name, ls := range map[string][][]uint64{"settled with Grow": laps(settled, true), "growing without Grow": laps(growing, false), "full with Grow": laps(full, true)} {
		for lap, pages := range ls {
			if !slices.Equal(pages, ls[0]) {
				t.Errorf("%s, lap %d: pages %v, want lap 0's %v", name, lap, pages, ls[0])
			}
		}
	}
}

// TestChooseGrowing: auto's prediction of a guest writing all over its
// memory, watched for 2 s and replayed over a migration of many times
// that, comes within 15% of the outcome's total time: each replay writes
// pages the guest had not, as it goes on doing. Replayed as watched, the
// same pages each lap, a 1 GiB guest writing 15 000 pages a second over
// 32 MiB/s was predicted 11.6 s against 17.2 s (-33%).
func TestChooseGrowing(t *testing.T) {
	w, err := ParseSynthetic("uniform:rate=4000", 1<<16, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Workload: w, Bandwidth: 8 << 20, Start: 20}
	c, err := ChooseAmong(context.Background(), o, Window(w, 0, 20), PreferTime, []string{"tsmc", "mecom", "precopy+postcopy"})
	if err != nil {
		t.Fatal(err)
	}
	outcome := Run(context.Background(), o, c.Mode)
	if outcome.Err != nil {
		t.Fatal(outcome.Err)
	}
	predicted, actual := float64(c.Predicted().Info.TotalTime), float64(outcome.Info.TotalTime)
	t.Logf("%s: predicted %.1f s against %.1f s (%+.0f%%), replayed %d times, %.0f%% of the pages written once moved",
		c.Mode, predicted/1e3, actual/1e3, 100*(predicted-actual)/actual, c.Predicted().Replays, 100*c.Predicted().Moved)
	if off := math.Abs(predicted-actual) / actual; off > 0.15 {
		t.Errorf("predicted %.1f s against %.1f s: off by %.0f%%, want at most 15%%", predicted/1e3, actual/1e3, 100*off)
	}
}

// TestChooseBudget: auto's predictions stop at Options.Budget of real
// time, and the modes whose simulations ran past it are not chosen, where
// no mode keeps within the downtime limit and so none cuts another short
// (walk 130: a 1 GiB guest's predictions took 9 minutes). The budget is
// spent as mecom's simulation ends, which takes a tenth of predictive's
// or less (its refits; 2.8 s against 24 s under the race detector): a
// budget of real time set between the two failed on loaded machines, both
// ways (CI 87, 107).
func TestChooseBudget(t *testing.T) {
	w, err := ParseSynthetic("uniform:rate=4000", 1<<16, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		spend func()
	)
	defer func(f func(time.Duration, func()) *time.Timer) { budgetTimer = f }(budgetTimer)
	budgetTimer = func(d time.Duration, f func()) *time.Timer {
		mu.Lock()
		defer mu.Unlock()
		spend = f
		return time.NewTimer(time.Hour)
	}
	o := Options{Workload: w, Bandwidth: 8 << 20, DowntimeLimit: time.Millisecond, Budget: time.Minute}
	o.Done = func(r Result) {
		if r.Mode != "mecom" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if spend == nil {
			t.Error("mecom's simulation ended before the budget's clock was started")
			return
		}
		spend()
	}
	start := time.Now()
	c, err := ChooseAmong(context.Background(), o, Window(w, 0, 20), PreferTime, []string{"predictive", "mecom"})
	took := time.Since(start)
	if err != nil || c.Mode != "mecom" {
		t.Errorf("chose %q (%v), want mecom, the one mode whose prediction ended", c.Mode, err)
	}
	var over int
	for _, r := range c.Predictions {
		var cut *CutShort
		if errors.As(r.Err, &cut) && errors.Is(r.Err, ErrOverBudget) && cut.Budget == o.Budget {
			over++
			if r.Mode == c.Mode {
				t.Errorf("chose %s, stopped past the budget", c.Mode)
			}
			if r.Mode == "predictive" && (cut.At <= 0 || cut.Sent == 0) {
				t.Errorf("predictive stopped past the budget at %v, %d bytes sent: want where it had come to", cut.At, cut.Sent)
			}
		}
	}
	t.Logf("chose %q (%v) in %v; %d stopped past the budget", c.Mode, err, took, over)
	if over != 1 {
		var ends []string
		for _, r := range c.Predictions {
			ends = append(ends, fmt.Sprintf("%s: %v", r.Mode, r.Err))
		}
		t.Errorf("%d modes stopped past the budget, want 1 (predictive), the choice took %v: %s", over, took, strings.Join(ends, "; "))
	}
}

// TestGrowSweepGoesOn: a guest whose new pages move on as one front (a
// sweep of memory in address order) is replayed going on from where it
// was, its next lap after its last; pages taken all over are not taken
// for a front. Drawn offsets put a 256 MiB sweep's laps over each other:
// post-copy was predicted 21% short, MECOM 53–89%.
func TestGrowSweepGoesOn(t *testing.T) {
	epoch := 100 * time.Millisecond
	sweep, err := ParseSynthetic("sweep:rate=20000", 1<<16, epoch)
	if err != nil {
		t.Fatal(err)
	}
	down := make([]trace.Epoch, 20) // 64 pages an epoch, down from the top
	for i := range down {
		down[i].Index = uint64(i)
		for p := range uint64(64) {
			down[i].Pages = append(down[i].Pages, 4096-64*uint64(i+1)+p)
		}
	}
	descending, err := NewTrace("descending", trace.Meta{MemoryBytes: 4096 * 4096, PageSize: 4096, Epoch: epoch}, down)
	if err != nil {
		t.Fatal(err)
	}
	// A live watch's sweep: epochs of 40, 64 and 96 pages in turn, as
	// harvests come early or late and the vCPU is slowed (walk 131).
	var jitter []trace.Epoch
	for i, at := range []uint64{40, 64, 96, 40, 64, 96, 40, 64, 96, 40, 64, 96, 40, 64, 96, 40, 64, 96, 40, 64} {
		var from uint64
		if i > 0 {
			from = jitter[i-1].Pages[len(jitter[i-1].Pages)-1] + 1
		}
		e := trace.Epoch{Index: uint64(i)}
		for p := range at {
			e.Pages = append(e.Pages, from+p)
		}
		jitter = append(jitter, e)
	}
	jittery, err := NewTrace("jittery", trace.Meta{MemoryBytes: 4096 * 4096, PageSize: 4096, Epoch: epoch}, jitter)
	if err != nil {
		t.Fatal(err)
	}
	uniform, err := ParseSynthetic("uniform:rate=15000", 1<<16, epoch)
	if err != nil {
		t.Fatal(err)
	}
	hotset, err := ParseSynthetic("hotset:rate=20000", 1<<16, epoch)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		w     Workload
		drift float64 // pages a lap of 20 epochs
	}{{"sweep", Window(sweep, 100, 20), 40000}, {"descending", descending, -1280}, {"jittery", jittery, 1304}, {"uniform", Window(uniform, 100, 20), 0},
		{"hotset", Window(hotset, 100, 20), 0}} {
		_, _, _, drift := writtenOnce(c.w, 0)
		if math.Abs(drift-c.drift) > math.Abs(c.drift)/50 || (c.drift == 0) != (drift == 0) {
			t.Errorf("%s: its front moves %.0f pages a lap, want %.0f", c.name, drift, c.drift)
		}
	}
	if raceDetector {
		t.Skip("seconds of simulation, over a minute under the race detector: make test runs the rest without it")
	}
	for _, mode := range []string{"precopy+postcopy", "mecom"} {
		for _, start := range []uint64{137, 250} {
			o := Options{Workload: sweep, Bandwidth: 32 << 20, Start: start}
			actual := Run(context.Background(), o, mode)
			p := o
			p.Workload, p.Start, p.Grow = Window(sweep, start-20, 20), 0, true
			predicted := Run(context.Background(), p, mode)
			if actual.Err != nil || predicted.Err != nil {
				t.Fatal(actual.Err, predicted.Err)
			}
			a, b := float64(actual.Info.TotalTime), float64(predicted.Info.TotalTime)
			t.Logf("%s from epoch %d: predicted %.1f s against %.1f s", mode, start, b/1e3, a/1e3)
			if math.Abs(b-a) > 0.05*a {
				t.Errorf("%s from epoch %d: predicted %.1f s against %.1f s (%+.0f%%), want within 5%%", mode, start, b/1e3, a/1e3, 100*(b-a)/a)
			}
		}
	}
	// Live, the migration starts some seconds after the watch (auto's
	// probes and predictions), and the sweep has gone on meanwhile: a 1
	// GiB guest sweeping 12 800 pages a second, watched 2 s, migrating 3 s
	// later.
	big, err := ParseSynthetic("sweep:rate=12800", 1<<18, epoch)
	if err != nil {
		t.Fatal(err)
	}
	for _, start := range []uint64{100, 150, 200} {
		o := Options{Workload: big, Bandwidth: 32 << 20, Start: start}
		actual := Run(context.Background(), o, "mecom")
		p := o
		p.Workload, p.Start, p.Grow, p.Lead = Window(big, start-50, 20), 0, true, 3*time.Second
		predicted := Run(context.Background(), p, "mecom")
		if actual.Err != nil || predicted.Err != nil {
			t.Fatal(actual.Err, predicted.Err)
		}
		a, b := float64(actual.Info.TotalTime), float64(predicted.Info.TotalTime)
		t.Logf("1 GiB, watched 3 s before epoch %d: predicted %.1f s against %.1f s, the front %.0f pages further on", start, b/1e3, a/1e3, predicted.Lead)
		if math.Abs(b-a) > 0.05*a || math.Abs(predicted.Lead-38400) > 384 {
			t.Errorf("1 GiB, watched 3 s before epoch %d: predicted %.1f s against %.1f s (%+.0f%%), want within 5%%; the front %.0f pages on, want 38400", start, b/1e3, a/1e3, 100*(b-a)/a, predicted.Lead)
		}
	}
}
