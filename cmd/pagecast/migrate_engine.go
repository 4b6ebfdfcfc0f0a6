package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/migrationmetrics"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemuguest"
)

// Engines that can move a QEMU VM's memory.
const (
	enginePagecast = "pagecast" // pagecast's rounds over QEMU's shared RAM, QEMU's migration for device state only
	engineQEMU     = "qemu"     // QEMU's own migration, pagecast's modes mapped onto its capabilities
)

// errTSMCOnQEMU says why tsmc on a QEMU VM is QEMU's post-copy.
var errTSMCOnQEMU = errors.New("tsmc's stage 3 cannot run on a QEMU destination with pagecast's engine: " +
	"userfaultfd sees only faults on pagecast's own mapping of the shared RAM, not the guest's through QEMU's, " +
	"so tsmc on QEMU uses QEMU's post-copy (--engine qemu)")

// chooseEngine picks the engine for a QEMU source: pagecast's where its RAM
// is shared memory and the mode needs no post-copy, else QEMU's own. It
// returns the attached source for pagecast's engine (close it), and why.
func chooseEngine(flag string, mon qmp.Monitor, mode string) (src *qemuguest.Source, engine, why string, err error) {
	if flag != "auto" && flag != enginePagecast && flag != engineQEMU {
		return nil, "", "", fmt.Errorf("--engine %q: want auto, pagecast or qemu", flag)
	}
	tsmc := strings.HasPrefix(mode, migrator.ModeTSMC)
	switch {
	case flag == engineQEMU:
		return nil, engineQEMU, "--engine qemu", nil
	case tsmc && flag == enginePagecast:
		return nil, "", "", errTSMCOnQEMU
	case tsmc:
		return nil, engineQEMU, "tsmc on QEMU is QEMU's post-copy: pagecast's stage 3 cannot pull pages into QEMU's memory", nil
	}
	src, err = qemuguest.New(mon)
	if err == nil {
		// The dirty hook must be there too: the TCG plugin, or eBPF on KVM.
		var log migrator.DirtyLog
		if log, err = src.StartDirtyLog(); err == nil {
			log.Close()
			return src, enginePagecast, "the source QEMU's guest RAM is shared memory and its dirty pages can be tracked", nil
		}
		src.Close()
	}
	if flag == enginePagecast {
		return nil, "", "", fmt.Errorf("pagecast's engine on the source QEMU: %w", err)
	}
	return nil, engineQEMU, "pagecast's engine cannot run on it: " + err.Error(), nil
}

// migrateWithEngine runs pagecast's engine in this process over a QEMU
// source: pages from its shared RAM, device state by QEMU's migration with
// x-ignore-shared, to a `pagecast vm run --monitor qemu --incoming`.
// metrics, if not nil, follows the migration.
func migrateWithEngine(c *cli.Context, src *qemuguest.Source, p migrator.Params, metrics *migrationmetrics.Exporter) error {
	cfg := migrator.Config{Mode: p.Mode, MaxBandwidth: p.MaxBandwidth, DowntimeLimit: p.DowntimeLimit,
		MaxRounds: p.MaxRounds, Profile: p.Profile, Log: slog.Default()}
	tlsFiles := migrator.TLSFiles{Cert: c.String("tls-cert"), Key: c.String("tls-key"), CA: c.String("tls-ca")}
	if tlsFiles.Enabled() {
		var err error
		if cfg.TLS, err = tlsFiles.Config(false); err != nil {
			return err
		}
	}
	if metrics != nil {
		metrics.Begin(time.Now(), migrationmetrics.EnginePagecast, p.Mode, p.MaxBandwidth)
	}
	m, err := migrator.Outgoing(src, c.String("to"), cfg)
	if err != nil {
		if metrics != nil {
			metrics.Observe(migrator.Info{Status: migrator.StatusFailed, ErrorDesc: err.Error()})
		}
		return err
	}
	ctx, cancel := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if metrics != nil {
		followed := make(chan struct{})
		defer func() { <-followed }()
		go func() { defer close(followed); metrics.Follow(context.Background(), m.Info, 200*time.Millisecond) }()
	}
	info, err := followMigration(ctx, m, newProgressBar(c.App.ErrWriter, c.Bool("quiet")))
	if err != nil {
		return fmt.Errorf("%w (the guest keeps running on the source)", err)
	}
	writeSummary(c.App.Writer, info, nil)
	return nil
}
