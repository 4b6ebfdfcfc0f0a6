// Package migrationmetrics exports live migrations as Prometheus metrics,
// in the pagecast_migration_* namespace modelled on KubeVirt's
// kubevirt_vmi_migration_* (data processed and remaining, dirty memory
// rate, transfer rate, start and end time, succeeded and failed) plus
// pagecast's own figures (round, deferred pages, throttle, mode, engine).
//
// It knows a migration only through query-migrate's shape
// (migrator.Info): the source feeds an Exporter each reply it polls,
// whether from pagecast's engine ((*migrator.Migration).Info) or from
// QEMU's own (QMP query-migrate), and Prometheus reads the latest at
// scrape time. An Exporter holds one VM's latest migration: a new one
// replaces the series of the one before, which Prometheus has kept.
// Units are base units: bytes, seconds, bytes per second, ratios.
package migrationmetrics
