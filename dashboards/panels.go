package dashboards

import "github.com/grafana/grafana-foundation-sdk/go/dashboard"

// The selectors of the dashboards' variables.
const (
	selVM        = `{vm="$vm"}`
	selInstance  = `{instance=~"$instance"}`
	selProfiled  = `{instance=~"$instance", vm=~"$profiled"}`
	selMigration = `{vm=~"$vm", migration=~"$migration"}`
)

func dirtying() *dashboard.DashboardBuilder {
	d := newDashboard("pagecast-dirtying", "pagecast / Dirtying: predicted vs actual",
		"How a VM dirties its memory and how well pagecast predicts it, epoch by epoch: from pagecast predict serve "+
			"(vm: a trace replayed with --replay, or live) and pagecast profile --metrics (instance).").
		WithVariable(labelVariable("vm", "vm", "pagecast_predictor_epochs_total", "The VM pagecast predict serve forecasts (a trace's base name, or live).", false, "")).
		WithVariable(labelVariable("instance", "instance", "pagecast_profiler_hook_info", "The pagecast profile processes Prometheus scrapes.", true, "")).
		// The profiler's row by its own VM: $vm is predict serve's, and
		// the row showed every profiled VM whichever was chosen (walk 95).
		WithVariable(labelVariable("profiled", "vm", `pagecast_profiler_hook_info{instance=~"$instance"}`, "The VMs those profiles record (profile --name).", true, ".*"))
	d = withPanels(d, "Forecast",
		panel{title: "Predicted vs actual dirty pages per epoch", unit: "short",
			description: "Pages the model predicted would be dirtied in the latest closed epoch (the sum of its per-page probabilities) against the pages that were; and both as means over the epochs of the rate window, which a scrape every few seconds does not sample as it does the latest epoch (one in 50 of 100 ms at 5 s).",
			queries: []query{{"pagecast_predicted_dirty_pages" + selVM, "predicted, latest epoch"}, {"pagecast_actual_dirty_pages" + selVM, "actual, latest epoch"},
				{"increase(pagecast_predicted_dirty_pages_total" + selVM + "[$__rate_interval]) / (increase(pagecast_predictor_epochs_total" + selVM + "[$__rate_interval]) > 0)", "predicted, mean"},
				{"increase(pagecast_actual_dirty_pages_total" + selVM + "[$__rate_interval]) / (increase(pagecast_predictor_epochs_total" + selVM + "[$__rate_interval]) > 0)", "actual, mean"}}},
		panel{title: "Forecast error", unit: "short", signed: true,
			description: "Predicted minus actual dirty pages in the latest closed epoch: above zero the model expected more dirtying than happened.",
			queries:     []query{{"pagecast_prediction_error_pages" + selVM, "predicted - actual"}}},
		panel{title: "Brier score", unit: "none",
			description: "Mean squared error of the per-page probabilities in the latest closed epoch, over all pages of the VM (0 is perfect; lower is better).",
			queries:     []query{{"pagecast_prediction_brier_score" + selVM, "Brier"}}},
		panel{title: "Dirty rate", unit: "binBps",
			description: "Bytes of guest memory dirtied per second in the latest closed epoch, and the rate the model predicts for the coming epoch.",
			queries:     []query{{"pagecast_actual_dirty_bytes_per_second" + selVM, "actual"}, {"pagecast_forecast_dirty_bytes_per_second" + selVM, "forecast for the next epoch"}}},
		panel{title: "Working set", unit: "bytes",
			description: "Memory the model predicts will be dirtied in the coming epoch with probability 0.5 or more: what a pre-copy round would defer.",
			queries:     []query{{"pagecast_forecast_working_set_bytes" + selVM, "working set"}}},
		panel{kind: heatmapPanel, title: "Where in memory it dirties", unit: "short",
			description: "Pages dirtied in the latest closed epoch in each of 32 equal regions of guest memory, by the region's first guest-physical address (darker: more pages).",
			queries:     []query{{"pagecast_region_dirty_pages" + selVM, "{{region}}"}}},
	)
	d = withPanels(d, "Profiler",
		panel{title: "Dirty rate measured by the profiler", unit: "binBps",
			description: "Bytes of guest memory dirtied per second in the profiler's latest closed epoch (pagecast profile), per profiled VM, and the mean over the epochs closed in the rate window, from its count of dirtied 4 KiB pages: a scrape sees one epoch of many (one in 50 of 100 ms every 5 s), the mean all of them.",
			// The mean per epoch recorded, not per second of the window:
			// a profile's end, served a minute more for the last
			// scrapes, took the mean down to 0 as if the guest had gone
			// idle (walk 106).
			queries: []query{{"pagecast_dirty_bytes_per_second" + selProfiled, "{{vm}} on {{instance}}: latest epoch"},
				{"rate(pagecast_dirty_pages_total" + selProfiled + "[$__rate_interval]) / (rate(pagecast_profiler_epochs_total" + selProfiled + "[$__rate_interval]) > 0) / pagecast_profiler_epoch_seconds" + selProfiled + " * 4096", "{{vm}} on {{instance}}: mean"}}},
		panel{kind: statPanel, title: "Hook in use", unit: "none", width: 6, names: true,
			description: "What records the dirty pages: an eBPF hook on KVM's dirty tracking, or tcg-plugin (pagecast's QEMU TCG plugin); for a replayed trace, the hook that recorded it.",
			queries:     []query{{"pagecast_profiler_hook_info" + selProfiled, "profile of {{vm}} on {{instance}}: {{hook}}"}, {"pagecast_predictor_vm_info" + selVM, "predict serve's {{vm}}: {{hook}}"}}},
		panel{kind: statPanel, title: "Guest memory", unit: "bytes", width: 6,
			description: "RAM of each profiled VM.",
			queries:     []query{{"pagecast_guest_memory_bytes" + selProfiled, "{{vm}} on {{instance}}"}}},
	)
	return d
}

// migrationDuration is how long a migration took, or has taken so far
// while it runs (query-migrate total-time): without mode auto's watching
// and weighing before it, which the end time less the start time has.
var migrationDuration = held("pagecast_migration_total_time_seconds" + selMigration)

// held is a migration's series as a range query sees it at any step: its
// last sample in the step's window. Plain, a step saw the last sample
// before it only until the series went stale, a scrape or two after the
// migration ended (migrate --metrics-linger), so at steps of 5 s and more
// a completed migration's outcome was seldom drawn (walk 95: succeeded
// 0 at a step of 12 s, no downtime at 10 s).
func held(expr string) string { return "last_over_time(" + expr + "[$__rate_interval])" }

func migrations() *dashboard.DashboardBuilder {
	d := newDashboard("pagecast-migrations", "pagecast / Migrations",
		"Live migrations, per migration: what is sent and what is left, the guest's dirty rate against the link, rounds, "+
			"deferred pages, CPU throttle, downtime and outcome; from pagecast migrate --metrics or pagecast vm run --metrics.").
		WithVariable(labelVariable("vm", "vm", "pagecast_migration_info", "The migrated VM (pagecast migrate --name).", true, ".*")).
		WithVariable(labelVariable("migration", "migration", `pagecast_migration_info{vm=~"$vm"}`, "The migration: its start time, UTC.", true, ".*"))
	d = withPanels(d, "Progress",
		panel{kind: stateTimeline, title: "Status", unit: "none",
			description: "The migration's query-migrate status over time: setup, active, device (stop-and-copy: the guest is paused), postcopy-active, completed, failed or cancelled.",
			queries:     []query{{held("pagecast_migration_status"+selMigration) + " == 1", "{{vm}} {{migration}} {{status}}"}},
			colors: []seriesColor{{".* setup$", "blue"}, {".* active$", "yellow"}, {".* device$", "purple"}, {".* postcopy-active$", "orange"},
				{".* completed$", "green"}, {".* failed$", "red"}, {".* cancelled$", "red"}}},
		panel{kind: tablePanel, title: "Mode and engine", unit: "none",
			description: "How each migration moves memory: pagecast's engine or QEMU's own, and the mode (precopy, predictive, throttle, tsmc, mecom and combinations; for mode auto, the mode it chose, once it has).",
			// Mode auto's series (mode="auto" while it watches, then the
			// mode it chose) made two rows of one migration (walk 95):
			// the auto row only where no other is.
			queries: []query{{`last_over_time(pagecast_migration_info{vm=~"$vm", migration=~"$migration", mode!="auto"}[$__range])` +
				` or on(vm, migration) last_over_time(pagecast_migration_info{vm=~"$vm", migration=~"$migration", mode="auto"}[$__range])`, ""}},
			columns: []column{{"vm", ""}, {"migration", ""}, {"engine", ""}, {"mode", ""}}},
		panel{title: "Data sent and remaining", unit: "bytes",
			description: "Bytes sent to the destination so far and bytes of guest memory still to send (query-migrate ram.transferred and ram.remaining), against guest memory.",
			// Held, so that the migration's end, all it sent, is drawn
			// at any step: plain, a 2.7 s migration at a 3 s step
			// showed 56 of the 85.5 MiB it sent, a sample from its
			// middle, as its series went stale before the next step
			// (walk 129).
			queries: []query{{held("pagecast_migration_data_processed_bytes" + selMigration), "{{vm}} {{migration}} sent"},
				{held("pagecast_migration_data_remaining_bytes" + selMigration), "{{vm}} {{migration}} remaining"},
				{held("pagecast_migration_data_total_bytes" + selMigration), "{{vm}} {{migration}} guest memory"}}},
		panel{title: "Dirty rate against link rate", unit: "binBps",
			description: "The guest's dirty rate over the latest round against the rate memory is sent and the link cap: pre-copy converges only while the dirty rate stays well below what the link moves. The engine's transfer rate is query-migrate's mbps (pagecast's engine: the mean since the migration began; QEMU: over its latest period); sent per second is Prometheus's derivative of the bytes sent.",
			queries: []query{{"pagecast_migration_dirty_memory_rate_bytes_per_second" + selMigration, "{{vm}} {{migration}} dirty rate"},
				{"pagecast_migration_memory_transfer_rate_bytes_per_second" + selMigration, "{{vm}} {{migration}} transfer rate (engine)"},
				{"deriv(pagecast_migration_data_processed_bytes" + selMigration + "[$__rate_interval])", "{{vm}} {{migration}} sent per second"},
				{"pagecast_migration_bandwidth_limit_bytes_per_second" + selMigration, "{{vm}} {{migration}} link cap"}}},
		panel{title: "Round", unit: "short", width: 8,
			description: "The pre-copy round under way, the stop-and-copy counted as one (QEMU's engine: its dirty-sync-count).",
			queries:     []query{{held("pagecast_migration_round" + selMigration), "{{vm}} {{migration}}"}}}, // its last round at any step (walk 129)
		panel{title: "Deferred pages", unit: "short", width: 8,
			description: "Pages the predictive policy has held back in the round under way, so far, because it expects them to be dirtied again (pagecast's engine; from 0 at each round's start; 0 in other modes).",
			queries:     []query{{"pagecast_migration_deferred_pages" + selMigration, "{{vm}} {{migration}}"}}},
		panel{title: "CPU throttle", unit: "percentunit", width: 8,
			description: "Share of the vCPUs' time taken away to slow the guest's dirtying (query-migrate cpu-throttle-percentage): the throttle mode, or QEMU's auto-converge.",
			queries:     []query{{"pagecast_migration_cpu_throttle_ratio" + selMigration, "{{vm}} {{migration}}"}}},
	)
	d = withPanels(d, "Outcome",
		panel{title: "Expected vs actual downtime", unit: "s",
			description: "The pause the switch-over would take, as the engine estimates it (while the migration runs; once completed, its last estimate), and the pause it took (QEMU counts until its last bytes are in its socket; pagecast until the destination has verified memory and says its guest runs), and the guest's own pause, the source's STOP to the destination's RESUME, where known (QEMU's engine: given migrate --dest-qmp).",
			// The estimate is held, as the outcome is, so that a
			// migration of a second shows it at a 15 s step (walk 133),
			// but not past a failure: the exporter drops it from a failed
			// migration, which held alone brought back (walk 96).
			queries: []query{{held("pagecast_migration_expected_downtime_seconds"+selMigration) +
				" unless on(vm, migration) (" + held("pagecast_migration_failed"+selMigration) + " == 1)", "{{vm}} {{migration}} expected"},
				{held("pagecast_migration_downtime_seconds" + selMigration), "{{vm}} {{migration}} actual"},
				{held("pagecast_migration_guest_paused_seconds" + selMigration), "{{vm}} {{migration}} guest paused"}}},
		panel{kind: statPanel, title: "Duration", unit: "s", width: 6,
			description: "How long the migration took, or has taken so far while it runs.",
			queries:     []query{{migrationDuration, "{{vm}} {{migration}}"}}},
		panel{kind: statPanel, title: "Succeeded or failed", unit: "none", width: 6,
			description: "1 under succeeded once the guest runs on the destination; 1 under failed once the migration failed or was cancelled (the guest then keeps running on the source, unless post-copy had begun).",
			queries: []query{{held("pagecast_migration_succeeded" + selMigration), "{{vm}} {{migration}} succeeded"},
				{held("pagecast_migration_failed" + selMigration), "{{vm}} {{migration}} failed"}},
			colors: []seriesColor{{".* succeeded$", "0:text,1:green"}, {".* failed$", "0:text,1:red"}}},
		panel{title: "Guest slowdown", unit: "percentunit",
			description: "Share of its vCPUs' time the guest lost while it ran during the migration (either engine; QEMU's post-copy waits given --dest-qmp): what the throttle withheld and what its vCPUs waited for pages they faulted on in post-copy, the downtime apart; with mode auto, what it predicted for the mode it chose.",
			queries: []query{{held("pagecast_migration_guest_slowdown_ratio" + selMigration), "{{vm}} {{migration}} actual"},
				{held(`pagecast_migration_predicted_guest_slowdown_ratio{vm=~"$vm", migration=~"$migration", chosen="1"}`), "{{vm}} {{migration}} predicted ({{mode}})"}}},
	)
	d = withPanels(d, "Mode auto",
		panel{kind: statPanel, title: "Predicted against actual total time", unit: "s", width: 12,
			description: "Mode auto (pagecast migrate --mode auto): the total time it predicted, before the migration began, for the mode it chose, against the time the migration took or has taken so far.",
			queries: []query{{held(`pagecast_migration_predicted_total_time_seconds{vm=~"$vm", migration=~"$migration", chosen="1"}`), "{{vm}} {{migration}} predicted ({{mode}})"},
				{migrationDuration, "{{vm}} {{migration}} actual"}}},
		panel{kind: tablePanel, title: "Every mode's prediction", unit: "s", width: 12,
			description: "Mode auto: the total time it predicted for every mode it simulated to the end on what it had watched of the guest (a mode stopped short once it could no longer win has none); chosen is 1 for the mode it ran.",
			queries:     []query{{"pagecast_migration_predicted_total_time_seconds" + selMigration, ""}},
			columns:     []column{{"vm", ""}, {"migration", ""}, {"mode", ""}, {"chosen", ""}, {"Value", "predicted total time"}}},
	)
	return d
}

func profilerHealth() *dashboard.DashboardBuilder {
	d := newDashboard("pagecast-profiler-health", "pagecast / Profiler health",
		"How pagecast profile itself is doing: writes recorded and dropped, its CPU per recorded write, its epochs and memory.").
		WithVariable(labelVariable("instance", "instance", "pagecast_profiler_hook_info", "The pagecast profile processes Prometheus scrapes.", true, ""))
	d = withPanels(d, "Events",
		panel{title: "Recorded writes per second", unit: "wps",
			description: "Guest page writes the hook recorded per second: eBPF events on KVM, or guest RAM stores the TCG plugin saw.",
			queries:     []query{{"rate(pagecast_profiler_events_total" + selInstance + "[$__rate_interval])", "{{vm}} on {{instance}}"}}},
		panel{title: "Dropped writes by reason", unit: "wps",
			description: "Writes of the profiled VM the hook could not record, per second, by reason (eBPF: slot_unknown, out_of_range, contended, ringbuf_full; TCG: out_of_range, beyond_ram). Anything above zero means missing pages in the trace.",
			queries:     []query{{"sum by (instance, vm, reason) (rate(pagecast_profiler_events_dropped_total" + selInstance + "[$__rate_interval]))", "{{vm}} on {{instance}}: {{reason}}"}}},
		panel{title: "Profiler CPU per recorded write", unit: "s",
			description: "CPU time of the pagecast profile process per write its hook recorded, while it records any. The hook's own cost is not in it: eBPF programs run on the vCPU threads, the TCG plugin inside QEMU.",
			queries:     []query{{"rate(process_cpu_seconds_total" + selInstance + "[$__rate_interval]) / on(instance, job) (rate(pagecast_profiler_events_total" + selInstance + "[$__rate_interval]) > 0)", "{{instance}}"}}},
		panel{title: "Other VMs' writes ignored", unit: "wps",
			description: "Events of other processes the eBPF hook saw and ignored, per second (always 0 for the TCG plugin, which runs inside the profiled QEMU).",
			queries:     []query{{"rate(pagecast_profiler_other_vm_events_total" + selInstance + "[$__rate_interval])", "{{vm}} on {{instance}}"}}},
	)
	d = withPanels(d, "Process",
		panel{title: "Epoch length", unit: "s",
			description: "The configured epoch length against the measured length of the latest closed epoch: the profiler keeps up while they match.",
			queries: []query{{"pagecast_profiler_epoch_seconds" + selInstance, "{{vm}} on {{instance}}: configured"},
				// The epoch's own length: 1/rate(epochs) climbed to 2.8 s
				// as a finished profile's metrics lingered (walk 52).
				{"pagecast_profiler_last_epoch_seconds" + selInstance, "{{vm}} on {{instance}}: measured"}}},
		panel{title: "Profiler memory", unit: "bytes",
			description: "Resident memory of the pagecast profile process.",
			queries:     []query{{"process_resident_memory_bytes" + selInstance, "{{instance}}"}}},
	)
	return d
}
