// Package dashboards holds pagecast's Grafana dashboards, written in Go
// with grafana-foundation-sdk and committed as JSON beside this file:
//
//   - dirtying.json: per VM, predicted against actual dirty pages per
//     epoch, forecast error, Brier score, dirty rate, working set, where in
//     memory it dirties (a heatmap of 32 regions), and the hook in use;
//   - migrations.json: per migration, data sent and remaining, dirty rate
//     against transfer rate and link cap, round, deferred pages, CPU
//     throttle, expected against actual downtime, status, mode and engine;
//   - profiler-health.json: recorded writes per second, drops by reason,
//     the profiler's CPU per recorded write, epoch length, memory.
//
// rules.yml holds Prometheus recording and alerting rules on the same
// metrics (a migration that stops making progress, one that failed, a
// profiler dropping writes), rules_test.yml their promtool tests, and
// pictures/ the README's PNGs of the panels (scripts/dashboard-pictures.sh).
//
// `make dashboards` (go run ./dashboards/gen) regenerates the JSON; a test
// fails when the committed files differ from what the code generates, and
// another lints them: a datasource variable, units, $__rate_interval in
// every range, a title and description on every panel, and only metrics
// pagecast exports. Committed loads the JSON for `pagecast report` and
// for the test that runs every panel's queries against a real Prometheus.
package dashboards
