package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"gatehouse.dev/gatehouse/hack/internal/loadgen"
	"gatehouse.dev/gatehouse/hack/internal/xdsload"
)

// serveXDS serves the fixtures over delta xDS; SIGUSR1 starts changing
// keys, SIGUSR2 stops and prints how many changed.
func serveXDS(args []string) error {
	fs := flag.NewFlagSet("xds", flag.ContinueOnError)
	o := xdsload.Options{}
	fs.StringVar(&o.ConfigDir, "config", "", "the fixtures' config directory (required)")
	credsPath := fs.String("credentials", "", "the fixtures' credentials file: the client's keys are never changed (required)")
	fs.StringVar(&o.Namespace, "namespace", "loadtest", "namespace of the fixtures")
	fs.StringVar(&o.OutDir, "out", "", "directory receiving ca.pem and token for the sidecar (required)")
	fs.StringVar(&o.Addr, "listen", "127.0.0.1:19301", "address to serve delta xDS on, once the fixtures are loaded")
	rate := fs.Float64("churn", 10, "keys changed per second between SIGUSR1 and SIGUSR2")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.ConfigDir == "" || o.OutDir == "" || *credsPath == "" {
		return errors.New("--config, --credentials and --out are required")
	}
	creds, err := loadgen.LoadCredentials(*credsPath)
	if err != nil {
		return err
	}
	o.ClientKeys = creds.APIKeys
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o.Log = funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{})
	start := time.Now()
	srv, err := xdsload.Start(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "loaded the fixtures in %v\n", time.Since(start).Round(time.Millisecond))
	err = churnOnSignals(ctx, srv, *rate, o.Log)
	return errors.Join(err, srv.Wait())
}

// churnOnSignals churns between SIGUSR1 and SIGUSR2 until ctx ends.
func churnOnSignals(ctx context.Context, srv *xdsload.Server, rate float64, log logr.Logger) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	var c *churn
	for {
		select {
		case <-ctx.Done():
			return c.stop()
		case sig := <-sigs:
			switch {
			case sig == syscall.SIGUSR2:
				err := c.stop()
				c = nil
				if err != nil {
					return err
				}
			case c == nil:
				log.Info("churning", "perSecond", rate)
				c = startChurn(ctx, srv, rate)
			}
		}
	}
}

// churn is one period of changes.
type churn struct {
	cancel  context.CancelFunc
	done    chan error
	started time.Time
	changed int
}

func startChurn(ctx context.Context, srv *xdsload.Server, rate float64) *churn {
	cctx, cancel := context.WithCancel(ctx)
	c := &churn{cancel: cancel, done: make(chan error, 1), started: time.Now()}
	go func() {
		var err error
		c.changed, err = srv.Churn(cctx, rate)
		c.done <- err
	}()
	return c
}

// stop ends the period and prints how many keys changed (hack/load.sh
// reads the line).
func (c *churn) stop() error {
	if c == nil {
		return nil
	}
	c.cancel()
	err := <-c.done
	secs := time.Since(c.started).Seconds()
	fmt.Printf("churn: %d changes in %.2fs (%.1f/s)\n", c.changed, secs, float64(c.changed)/secs)
	return err
}
