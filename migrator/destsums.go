package migrator

import (
	"sync/atomic"
	"time"

	"github.com/pagecast/pagecast/bitmap"
)

// destSums keeps the destination's memory checksums as the pages arrive,
// so that at the switch-over only the chunks written since are summed
// again: there the source's guest is paused, and summing all of a large
// guest's memory took as long as sending what was left (a 5 GiB guest
// holding 2.6 GiB: 229 ms at the destination). Only the receiver writes a
// destination's memory while it waits, and it counts each write in its
// chunk's generation after making it; a chunk's sum is kept with the
// generation it was taken at, and used only if no write came since. It
// runs where memory is a shared mapping of a file (MemoryFile): holes are
// read as zeros, not faulted in, and the sums read memory the receiver
// writes meanwhile, which is not the Go heap's.
type destSums struct {
	mem    []byte
	fd     int
	chunk  uint64 // pages a chunk
	gen    []atomic.Uint32
	sums   []uint32 // written by the sweeps, read once they have stopped
	sumGen []uint32
	have   []bool

	kick   chan struct{}
	stop   atomic.Bool
	done   chan struct{}
	passes atomic.Uint32 // passes made, for tests
}

// sweepEvery is how often the receiver asks for a pass, besides at the end
// of each round.
const sweepEvery = 500 * time.Millisecond

// startDestSums starts keeping the checksums of mem, the mapping of file
// fd, in chunks of chunkBytes; sweep asks for a pass over the chunks
// written since the last.
func startDestSums(mem []byte, fd int, chunkBytes int) *destSums {
	pages := uint64(len(mem)) / PageSize
	chunk := uint64(chunkBytes) / PageSize
	n := (pages + chunk - 1) / chunk
	d := &destSums{mem: mem, fd: fd, chunk: chunk, gen: make([]atomic.Uint32, n),
		sums: make([]uint32, n), sumGen: make([]uint32, n), have: make([]bool, n),
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	go d.run()
	return d
}

// wrote counts a write to page gfn, made already.
func (d *destSums) wrote(gfn uint64) { d.gen[gfn/d.chunk].Add(1) }

// sweep asks for the chunks written since the last pass to be summed, in
// the background.
func (d *destSums) sweep() {
	if d.stop.Load() {
		return
	}
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *destSums) run() {
	defer close(d.done)
	for range d.kick {
		if d.stop.Load() {
			return
		}
		d.pass()
		d.passes.Add(1)
	}
}

// pass sums every chunk written since its sum was taken, until stopped.
// The generations are read before the holes are found, so that a write
// the holes do not show is one that came after, and voids the sum.
func (d *destSums) pass() {
	gens := make([]uint32, len(d.gen))
	for c := range d.gen {
		gens[c] = d.gen[c].Load()
	}
	hole, err := holes(d.fd, uint64(len(d.mem))/PageSize)
	if err != nil {
		return
	}
	for c := range gens {
		if d.stop.Load() {
			return
		}
		if d.have[c] && d.sumGen[c] == gens[c] {
			continue
		}
		d.sums[c] = d.sum(uint64(c), hole)
		d.sumGen[c], d.have[c] = gens[c], true
	}
}

func (d *destSums) sum(c uint64, hole *bitmap.Bitmap) uint32 {
	pages := uint64(len(d.mem)) / PageSize
	return sumPages(d.mem, c*d.chunk, min((c+1)*d.chunk, pages), hole, 0)
}

// close stops the sweeps and waits for the one under way.
func (d *destSums) close() {
	if d.stop.Swap(true) {
		return
	}
	close(d.kick)
	<-d.done
}

// digest stops the sweeps and returns the checksums of all memory, in
// chunks of chunkBytes: the sums kept where no write came since, the others
// taken now, on every core. Nothing writes memory any more.
func (d *destSums) digest(chunkBytes uint32) Digest {
	d.close()
	if uint64(chunkBytes) != d.chunk*PageSize {
		return computeDigest(d.mem, int(chunkBytes), d.fd)
	}
	var todo []int
	for c := range d.gen {
		if !d.have[c] || d.sumGen[c] != d.gen[c].Load() {
			todo = append(todo, c)
		}
	}
	out := Digest{ChunkBytes: chunkBytes, Sums: d.sums}
	if len(todo) == 0 {
		return out
	}
	hole, err := holes(d.fd, uint64(len(d.mem))/PageSize)
	if err != nil {
		return computeDigest(d.mem, int(chunkBytes), -1)
	}
	onCores(len(todo), func(i int) { d.sums[todo[i]] = d.sum(uint64(todo[i]), hole) })
	return out
}
