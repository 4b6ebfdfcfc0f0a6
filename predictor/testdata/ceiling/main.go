// Command ceiling measures how far a forecast drawn from a page's dirty
// history can get on a trace, in hindsight: every page at every scored
// epoch is put in a class by what the predictor's features look at (its
// last 8 epochs, the age of its last write, its neighbours in the last
// epoch, its distance from the last epoch's allocation frontier, its
// lifetime write rate, its 2 MiB region's share written in the last
// epoch), and each class forecasts the share of its own pages that were
// dirtied: a lookup table fitted on the very outcomes it is scored on
// (in-sample), and one fitted on the even epochs and scored on the odd
// (out of sample). The in-sample table is an optimistic ceiling for any
// predictor of these features; neither is a predictor one could run.
// It prints F1 (at 0.5 and at the best cut) and Brier for the table and
// for the last-epoch baseline, scored as predict eval scores (8 epochs of
// warm-up, every guest page every epoch, dirtied within the next h).
//
//	go run ./predictor/testdata/ceiling [-h 1,8] predictor/testdata/real/*.pct
package main

import (
	"flag"
	"fmt"
	"log"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/pagecast/pagecast/trace"
)

var (
	coarse bool
	drop   = map[string]bool{}
)

const (
	warmup     = 8
	regionBits = 9 // 2 MiB of 4 KiB pages
)

func main() {
	hs := flag.String("h", "1,8", "horizons")
	dropList := flag.String("drop", "", "classes without these parts (comma-separated: age, front, nb, life, region, mid), to see what each adds")
	flag.BoolVar(&coarse, "coarse", false, "classes by the last 8 epochs, the age of the last write and the frontier alone (fewer classes, less fitted to the noise)")
	flag.Parse()
	for _, d := range strings.Split(*dropList, ",") {
		if d != "" {
			drop[d] = true
		}
	}
	var horizons []int
	for _, s := range strings.Split(*hs, ",") {
		h, err := strconv.Atoi(s)
		if err != nil || h < 1 {
			log.Fatalf("bad horizon %q", s)
		}
		horizons = append(horizons, h)
	}
	fmt.Printf("%-8s %2s  %-22s %-22s %-22s %s\n", "trace", "h", "last-epoch F1/Brier", "table out-of-sample", "table in-sample", "in-sample F1 at best cut (cut)  classes/samples")
	for _, path := range flag.Args() {
		m, epochs, damage, err := trace.ReadFile(path)
		if err != nil || len(damage) > 0 {
			log.Fatalf("%s: %v %v", path, err, damage)
		}
		name := strings.TrimSuffix(filepath.Base(path), ".pct")
		for _, h := range horizons {
			r := run(epochs, m.Pages(), h)
			fmt.Printf("%-8s %2d  %.4f / %.6f     %.4f / %.6f     %.4f / %.6f     %.4f (%.3f)                 %d/%.1fM\n", name, h,
				r.base.f1, r.base.brier, r.oos.f1, r.oos.brier, r.in.f1, r.in.brier, r.inBest, r.inCut, r.classes, float64(r.scored)/1e6)
		}
	}
}

type score struct{ f1, brier float64 }

type result struct {
	base, in, oos   score
	inBest, inCut   float64
	classes, scored int
}

// page is what the table's classes are made of.
type page struct {
	hist       uint64 // bit 0: the last epoch
	last       int32  // epoch of the last write; -1 never
	first      int32
	writes     int32
	everBefore bool
}

func run(epochs []trace.Epoch, pages uint64, h int) result {
	for i := 1; i < len(epochs); i++ {
		if epochs[i].Index != epochs[i-1].Index+1 {
			log.Fatalf("epoch %d: gap in the trace", epochs[i].Index)
		}
	}
	ps := make([]page, pages)
	for i := range ps {
		ps[i].last, ps[i].first = -1, -1
	}
	type count struct{ n, d [2]uint64 } // by epoch parity
	table := map[uint32]*count{}
	var baseTP, basePP, baseP, baseN, baseSq uint64
	nb := make([]int32, pages+1) // prefix sums of the last epoch's writes
	region := make([]uint32, pages>>regionBits+1)
	outcome := make([]bool, pages)
	keys := make([]uint32, pages)
	for t := 0; t+h <= len(epochs); t++ {
		if t >= warmup {
			clear(outcome)
			for k := t; k < t+h; k++ {
				for _, g := range epochs[k].Pages {
					outcome[g] = true
				}
			}
			classify(ps, int32(t), nb, region, keys)
			par := t & 1
			for g := range ps {
				c := table[keys[g]]
				if c == nil {
					c = &count{}
					table[keys[g]] = c
				}
				c.n[par]++
				pred := ps[g].hist&1 == 1
				if outcome[g] {
					c.d[par]++
					baseP++
					if pred {
						baseTP++
					}
				}
				if pred {
					basePP++
				}
				if pred != outcome[g] {
					baseSq++
				}
				baseN++
			}
		}
		observe(ps, epochs[t].Pages, int32(t))
	}
	r := result{base: score{2 * float64(baseTP) / float64(basePP+baseP), float64(baseSq) / float64(baseN)},
		classes: len(table), scored: int(baseN)}

	// In sample: each class forecasts its own rate.
	type cls struct {
		rate float64
		n, d uint64
	}
	var all []cls
	var sq float64
	var tp, pp, pos, n uint64
	for _, c := range table {
		cn, cd := c.n[0]+c.n[1], c.d[0]+c.d[1]
		p := float64(cd) / float64(cn)
		all = append(all, cls{p, cn, cd})
		sq += float64(cd) - float64(cd)*p // sum over the class of (y - p)²
		n += cn
		pos += cd
		if p >= 0.5 {
			tp += cd
			pp += cn
		}
	}
	r.in = score{2 * float64(tp) / float64(pp+pos), sq / float64(n)}
	slices.SortFunc(all, func(a, b cls) int {
		switch {
		case a.rate > b.rate:
			return -1
		case a.rate < b.rate:
			return 1
		}
		return 0
	})
	tp, pp = 0, 0
	for _, c := range all {
		tp += c.d
		pp += c.n
		if f := 2 * float64(tp) / float64(pp+pos); f > r.inBest {
			r.inBest, r.inCut = f, c.rate
		}
	}

	// Out of sample: fitted on the even epochs, scored on the odd; a class
	// the even epochs never saw forecasts the even epochs' overall rate.
	var evenN, evenD uint64
	for _, c := range table {
		evenN += c.n[0]
		evenD += c.d[0]
	}
	prior := float64(evenD) / float64(max(evenN, 1))
	sq, tp, pp, pos, n = 0, 0, 0, 0, 0
	for _, c := range table {
		p := prior
		if c.n[0] > 0 {
			p = float64(c.d[0]) / float64(c.n[0])
		}
		d, cn := float64(c.d[1]), float64(c.n[1])
		sq += d*(1-p)*(1-p) + (cn-d)*p*p
		n += c.n[1]
		pos += c.d[1]
		if p >= 0.5 {
			tp += c.d[1]
			pp += c.n[1]
		}
	}
	r.oos = score{2 * float64(tp) / float64(pp+pos), sq / float64(n)}
	return r
}

func observe(ps []page, dirty []uint64, t int32) {
	for g := range ps {
		ps[g].hist <<= 1
	}
	for _, g := range dirty {
		p := &ps[g]
		p.hist |= 1
		if p.first < 0 {
			p.first = t
		}
		p.last = t
		p.writes++
	}
}

// classify puts every page in its class before epoch t.
func classify(ps []page, t int32, nb []int32, region []uint32, keys []uint32) {
	clear(region)
	for g := range ps {
		w := int32(ps[g].hist & 1)
		nb[g+1] = nb[g] + w
		region[g>>regionBits] += uint32(w)
	}
	n := len(ps)
	lastFirst := -1 << 30
	nextFirst := make([]int, n+1)
	nextFirst[n] = 1 << 30
	for g := n - 1; g >= 0; g-- {
		nextFirst[g] = nextFirst[g+1]
		if ps[g].first == t-1 {
			nextFirst[g] = g
		}
	}
	for g := range ps {
		p := &ps[g]
		if p.first == t-1 {
			lastFirst = g
		}
		h8 := uint32(p.hist & 0xff)
		var age, front uint32
		if h8 == 0 {
			switch a := t - p.last; {
			case p.last < 0:
				age = 1
			case a <= 16:
				age = 2
			case a <= 64:
				age = 3
			default:
				age = 4
			}
			switch d, b := g-lastFirst, nextFirst[g]-g; {
			case d >= 1 && d <= 8:
				front = 1
			case d >= 1 && d <= 64:
				front = 2
			case d >= 1 && d <= 1024:
				front = 3
			case b >= 1 && b <= 32:
				front = 4
			default:
				front = 5
			}
		}
		lo, hi := max(g-8, 0), min(g+9, n)
		var nbc uint32
		switch c := nb[hi] - nb[lo] - int32(p.hist&1); {
		case c == 0:
		case c == 1:
			nbc = 1
		case c <= 4:
			nbc = 2
		case c <= 8:
			nbc = 3
		default:
			nbc = 4
		}
		var life uint32
		if p.first >= 0 {
			rate := float64(p.writes) / float64(t-p.first)
			switch {
			case rate < 1.0/64:
				life = 1
			case rate < 1.0/16:
				life = 2
			case rate < 1.0/4:
				life = 3
			default:
				life = 4
			}
		}
		var reg uint32
		switch share := float64(region[g>>regionBits]) / (1 << regionBits); {
		case share == 0:
		case share < 0.01:
			reg = 1
		case share < 0.1:
			reg = 2
		default:
			reg = 3
		}
		// Pages seen 9-64 epochs ago: how many of those epochs.
		mid := uint32(min(bits.OnesCount64(p.hist>>8), 3))
		for name, v := range map[string]*uint32{"age": &age, "front": &front, "nb": &nbc, "life": &life, "region": &reg, "mid": &mid} {
			if drop[name] {
				*v = 0
			}
		}
		if coarse {
			keys[g] = (h8*5+age)*6 + front
			continue
		}
		keys[g] = ((((((h8*5+age)*6+front)*5+nbc)*5+life)*4+reg)*4 + mid)
	}
}

func init() {
	log.SetFlags(0)
	log.SetOutput(os.Stderr)
}
