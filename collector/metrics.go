package collector

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are read at scrape time from the collector and the programs'
// counters; Register them with a prometheus.Registerer.
type Metrics struct{ c *Collector }

var _ prometheus.Collector = Metrics{}

// Metrics returns the collector's Prometheus metrics.
func (c *Collector) Metrics() Metrics { return Metrics{c} }

var (
	descDirtyPages = prometheus.NewDesc("pagecast_dirty_pages_total",
		"Guest pages dirtied, summed over closed epochs (a page counts once per epoch it was written in).", nil, nil)
	descDirtyRate = prometheus.NewDesc("pagecast_dirty_bytes_per_second",
		"Bytes of guest memory dirtied per second in the latest closed epoch.", nil, nil)
	descEpochs = prometheus.NewDesc("pagecast_profiler_epochs_total",
		"Epochs closed.", nil, nil)
	descEpochLength = prometheus.NewDesc("pagecast_profiler_epoch_seconds",
		"Configured epoch length.", nil, nil)
	descLastEpoch = prometheus.NewDesc("pagecast_profiler_last_epoch_seconds",
		"Measured length of the latest closed epoch (from its start to its close); present once one has closed.", nil, nil)
	descMemory = prometheus.NewDesc("pagecast_guest_memory_bytes",
		"Guest RAM of the profiled virtual machine.", nil, nil)
	descEvents = prometheus.NewDesc("pagecast_profiler_events_total",
		"Page writes the hook (eBPF programs or TCG plugin) recorded.", nil, nil)
	descDropped = prometheus.NewDesc("pagecast_profiler_events_dropped_total",
		"Writes of the profiled VM the hook could not record, by reason.", []string{"reason"}, nil)
	descOther = prometheus.NewDesc("pagecast_profiler_other_vm_events_total",
		"Events of other processes seen and ignored by the hook.", nil, nil)
	descHook = prometheus.NewDesc("pagecast_profiler_hook_info",
		"The dirty-tracking hook in use: an eBPF hook or tcg-plugin (value 1).", []string{"hook"}, nil)
)

// Describe implements prometheus.Collector.
func (m Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDirtyPages, descDirtyRate, descEpochs, descEpochLength, descLastEpoch,
		descMemory, descEvents, descDropped, descOther, descHook} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m Metrics) Collect(ch chan<- prometheus.Metric) {
	c := m.c
	c.mu.Lock()
	total, rate, epochs, last := c.total, c.rate, c.epoch-1, c.lastLength
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descDirtyPages, prometheus.CounterValue, float64(total))
	ch <- prometheus.MustNewConstMetric(descDirtyRate, prometheus.GaugeValue, rate)
	ch <- prometheus.MustNewConstMetric(descEpochs, prometheus.CounterValue, float64(epochs))
	ch <- prometheus.MustNewConstMetric(descEpochLength, prometheus.GaugeValue, c.cfg.Epoch.Seconds())
	if last > 0 {
		ch <- prometheus.MustNewConstMetric(descLastEpoch, prometheus.GaugeValue, last.Seconds())
	}
	ch <- prometheus.MustNewConstMetric(descMemory, prometheus.GaugeValue, float64(c.vmm.target.MemoryBytes))
	ch <- prometheus.MustNewConstMetric(descHook, prometheus.GaugeValue, 1, c.hook.name())
	s, err := c.Stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descEvents, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(s.Events))
	ch <- prometheus.MustNewConstMetric(descOther, prometheus.CounterValue, float64(s.OtherVM))
	for reason, v := range s.Dropped {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(v), reason)
	}
}
