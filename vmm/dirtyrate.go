package vmm

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"time"
)

// Dirty-rate measurement modes, as QEMU's calc-dirty-rate names them.
const (
	RateModePageSampling = "page-sampling" // hash sampled pages before and after
	RateModeDirtyRing    = "dirty-ring"    // count pages reported by the dirty rings
	RateModeDirtyBitmap  = "dirty-bitmap"  // count pages in KVM's dirty bitmap
)

// DirtyRate is the result of a dirty-rate measurement, shaped like QEMU's
// query-dirty-rate reply (DirtyRateInfo) plus pagecast's exact page count.
type DirtyRate struct {
	Status       string  `json:"status"`               // unstarted, measuring, measured
	DirtyRate    *int64  `json:"dirty-rate,omitempty"` // MiB/s, as QEMU reports it
	StartTime    int64   `json:"start-time"`           // seconds since the VM started
	CalcTime     int64   `json:"calc-time"`            // in CalcTimeUnit
	CalcTimeUnit string  `json:"calc-time-unit"`       // second, or millisecond for a window of a fraction of one (QEMU 8.2's)
	SamplePages  uint64  `json:"sample-pages"`
	Mode         string  `json:"mode"`
	DirtyPages   uint64  `json:"x-pagecast-dirty-pages"`            // distinct pages dirtied in the window (sampling: estimated)
	PagesPerSec  float64 `json:"x-pagecast-dirty-pages-per-second"` // DirtyPages / window
}

// rateMeter runs one calc-dirty-rate measurement at a time.
type rateMeter struct {
	mu     sync.Mutex
	last   DirtyRate
	stop   chan struct{}  // closed by shut: a measurement ends at once
	closed bool           // shut: no measurement starts
	wg     sync.WaitGroup // the measurement running
}

// shut ends a measurement that runs and waits for it: the VM's memory and
// rings are about to go (a page-sampling one read them after Close had
// unmapped them, and the process died; found by a review walk).
func (m *rateMeter) shut() {
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		if m.stop != nil {
			close(m.stop)
		}
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// sleep waits d, or less if the meter is shut; it says whether d passed.
func (m *rateMeter) sleep(stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}

// CalcDirtyRate starts measuring the guest's dirty rate over window in the
// background; QueryDirtyRate reports the result.
func (vm *VM) CalcDirtyRate(window time.Duration, mode string, samplePagesPerGiB uint64) error {
	if window < 100*time.Millisecond || window > 60*time.Second {
		return fmt.Errorf("calc-time %s out of range 0.1s..60s", window)
	}
	switch mode {
	case RateModeDirtyRing:
		if vm.DirtyMode() != DirtyRing {
			return fmt.Errorf("mode %s is not enabled, use other method instead (this VM tracks with the %s)", mode, vm.DirtyMode())
		}
	case RateModeDirtyBitmap:
	case RateModePageSampling:
		if samplePagesPerGiB == 0 {
			samplePagesPerGiB = 512
		}
	default:
		return fmt.Errorf("unknown dirty rate mode %q", mode)
	}
	if st, _ := vm.State(); st != StateRunning && st != StatePaused {
		return fmt.Errorf("calc-dirty-rate: virtual machine is %s", st)
	}
	m := &vm.rate
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last.Status == "measuring" {
		return errors.New("the dirty rate is already being measured")
	}
	if m.closed {
		return errors.New("calc-dirty-rate: virtual machine is shutdown")
	}
	if m.stop == nil {
		m.stop = make(chan struct{})
	}
	stop := m.stop
	m.last = DirtyRate{
		Status:       "measuring",
		StartTime:    int64(time.Since(vm.started).Seconds()),
		CalcTime:     int64(window.Seconds()),
		CalcTimeUnit: "second",
		SamplePages:  samplePagesPerGiB,
		Mode:         mode,
	}
	if window%time.Second != 0 {
		m.last.CalcTime, m.last.CalcTimeUnit = window.Milliseconds(), "millisecond"
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		pages, elapsed, err := vm.measure(stop, window, mode, samplePagesPerGiB)
		m.mu.Lock()
		defer m.mu.Unlock()
		if err != nil {
			if !errors.Is(err, errVMClosing) {
				vm.log.Error("dirty rate measurement", "err", err)
			}
			m.last.Status = "unstarted"
			return
		}
		mib := int64(float64(pages*PageSize) / (1 << 20) / elapsed.Seconds())
		m.last.Status = "measured"
		m.last.DirtyRate = &mib
		m.last.DirtyPages = pages
		m.last.PagesPerSec = float64(pages) / elapsed.Seconds()
	}()
	return nil
}

// errVMClosing ends a measurement the VM's Close cut short.
var errVMClosing = errors.New("the virtual machine is closing")

// QueryDirtyRate is the latest measurement.
func (vm *VM) QueryDirtyRate() DirtyRate {
	vm.rate.mu.Lock()
	defer vm.rate.mu.Unlock()
	r := vm.rate.last
	if r.Status == "" {
		r.Status = "unstarted"
	}
	return r
}

func (vm *VM) measure(stop <-chan struct{}, window time.Duration, mode string, perGiB uint64) (uint64, time.Duration, error) {
	if mode == RateModePageSampling {
		return vm.measureBySampling(stop, window, perGiB)
	}
	log, err := vm.StartDirtyLog()
	if err != nil {
		return 0, 0, err
	}
	defer log.Close()
	start := time.Now()
	if !vm.rate.sleep(stop, window) {
		return 0, 0, errVMClosing
	}
	set, err := log.Harvest()
	if err != nil {
		return 0, 0, err
	}
	return set.Count(), time.Since(start), nil
}

// measureBySampling hashes a random sample of pages, waits, hashes them
// again and scales the share that changed to the whole memory: QEMU's
// default method, which needs no dirty logging.
func (vm *VM) measureBySampling(stop <-chan struct{}, window time.Duration, perGiB uint64) (uint64, time.Duration, error) {
	pages := vm.cfg.MemoryBytes / PageSize
	n := max(perGiB*vm.cfg.MemoryBytes>>30, 64)
	n = min(n, pages)
	sample := make([]uint64, n)
	for i := range sample {
		sample[i] = rand.Uint64N(pages)
	}
	hash := func(gfn uint64) uint64 {
		h := fnv.New64a()
		h.Write(vm.mem[gfn*PageSize : (gfn+1)*PageSize])
		return h.Sum64()
	}
	before := make([]uint64, n)
	for i, g := range sample {
		before[i] = hash(g)
	}
	start := time.Now()
	if !vm.rate.sleep(stop, window) {
		return 0, 0, errVMClosing
	}
	changed := uint64(0)
	for i, g := range sample {
		if hash(g) != before[i] {
			changed++
		}
	}
	return changed * pages / n, time.Since(start), nil
}
