package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/predictor/service"
	"github.com/pagecast/pagecast/trace"
)

func predictServeCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "serve per-page dirty probabilities over HTTP, from a trace or a live VM",
		Description: "Keeps a predictor for each VM, fed by a trace replayed at its recorded pace (--trace, repeatable)\n" +
			"or by profiling a live VM (--collector unix:QMP: eBPF on KVM, needs root; the TCG plugin on a QEMU\n" +
			"under TCG), and serves:\n" +
			"  GET /v1/vms                                  the VMs\n" +
			"  GET /v1/vms/{id}                             forecast: predicted dirty pages and rate, working set, last epoch's error\n" +
			"  GET /v1/vms/{id}/probabilities?start=&count= per-page probabilities for a range of pages\n" +
			"  GET /v1/vms/{id}/hotset?threshold=&limit=    pages predicted dirty\n" +
			"  GET /metrics                                 predicted vs actual dirty pages per epoch, Brier score\n" +
			"A VM's id is its trace file's base name, or \"live\" for --collector.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:9470", Usage: "address to serve on (loopback by default)"},
			&cli.StringSliceFlag{Name: "trace", Usage: "trace file to replay (pagecast profile --out, or trace import)"},
			&cli.Float64Flag{Name: "speed", Value: 1, Usage: "trace replay speed, 1 = the recorded pace, 0 = at once"},
			&cli.BoolFlag{Name: "loop", Value: true, Usage: "replay traces again from the start when they end"},
			&cli.StringFlag{Name: "collector", Usage: "profile a live VM through its QMP socket, unix:PATH"},
			&cli.DurationFlag{Name: "epoch", Value: time.Second, Usage: "epoch length for --collector"},
		},
		Action: runServe,
	}
}

func runServe(c *cli.Context) error {
	log := slog.Default()
	if len(c.StringSlice("trace")) == 0 && c.String("collector") == "" {
		return errors.New("give --trace FILE or --collector unix:PATH")
	}
	ctx, cancel := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer cancel()
	svc := service.New(log)

	for _, path := range c.StringSlice("trace") {
		meta, epochs, damage, err := trace.ReadFile(path)
		if err != nil {
			return err
		}
		if len(damage) > 0 {
			log.Warn("trace damaged; serving its intact epochs", "trace", path, "damage", len(damage))
		}
		id := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
		vm, err := svc.AddVM(id, meta.Pages(), uint64(meta.PageSize), meta.Epoch, "trace "+path)
		if err != nil {
			return err
		}
		go service.Replay(ctx, vm, epochs, c.Float64("speed"), c.Bool("loop"))
	}
	if spec := c.String("collector"); spec != "" {
		path, ok := strings.CutPrefix(spec, "unix:")
		if !ok {
			return fmt.Errorf("--collector %q: want unix:PATH", spec)
		}
		col, err := collector.New(collector.Config{QMP: path, Epoch: c.Duration("epoch"), Log: log})
		if err != nil {
			return err
		}
		defer col.Close()
		t := col.Target()
		vm, err := svc.AddVM("live", t.MaxPages(), 4096, c.Duration("epoch"), fmt.Sprintf("%s pid %d", t.Kind, t.PID))
		if err != nil {
			return err
		}
		go func() {
			if err := col.Run(ctx, func(e collector.Epoch) error { vm.Observe(e.Pages); return nil }); err != nil {
				log.Error("collector stopped", "err", err)
				cancel()
			}
		}()
	}

	l, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	srv := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, done := context.WithTimeout(context.Background(), 2*time.Second)
		defer done()
		srv.Shutdown(shut)
	}()
	fmt.Fprintf(c.App.Writer, "serving forecasts on http://%s/v1/vms and metrics on http://%s/metrics\n", l.Addr(), l.Addr())
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
