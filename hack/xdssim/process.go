package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"gatehouse.dev/gatehouse/hack/internal/loadgen"
)

// buildBinaries builds cmd/gatehouse and cmd/gatehouse-sidecar into dir.
func buildBinaries(ctx context.Context, dir string) (operator, sidecar string, err error) {
	operator, sidecar = filepath.Join(dir, "gatehouse"), filepath.Join(dir, "gatehouse-sidecar")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./cmd/gatehouse", "./cmd/gatehouse-sidecar") //nolint:gosec // our own temporary directory
	cmd.Dir = repoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return operator, sidecar, nil
}

// process is a child process whose output goes to a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when it has exited
	err  error         // how it exited, once done is closed
}

// startProcess runs bin with args, its output in logDir/<name>.log. The
// child is killed if this process dies (Pdeathsig), and stopped with
// SIGTERM (then SIGKILL after 10 s) when ctx ends or stop is called.
func startProcess(ctx context.Context, name, logDir, bin string, args ...string) (*process, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath) //nolint:gosec // a file in our own temporary directory
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, args...) //nolint:gosec // binaries we just built
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	return p, nil
}

// stop ends the process (SIGTERM, SIGKILL after 10 s) and waits for it.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// exited returns an error if the process has ended.
func (p *process) exited() error {
	select {
	case <-p.done:
		if p.err == nil {
			return fmt.Errorf("%s has exited (log: %s)", p.name, p.log)
		}
		return fmt.Errorf("%s exited (log: %s): %w", p.name, p.log, p.err)
	default:
		return nil
	}
}

// usage is a process's CPU time so far and resident memory now.
type usage struct {
	CPU time.Duration
	RSS int64 // bytes, VmRSS of /proc/<pid>/status
}

func (p *process) usage() (usage, error) {
	cpu, err := loadgen.ProcessCPU(p.cmd.Process.Pid)()
	if err != nil {
		return usage{}, err
	}
	rss, err := vmRSS(p.cmd.Process.Pid)
	return usage{CPU: cpu, RSS: rss}, err
}

// vmRSS reads VmRSS (kB) of /proc/<pid>/status, in bytes.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(rest), []byte("kB")))), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/<pid>/status")
}

// freeAddr returns a loopback address with a port free at the time.
func freeAddr(ctx context.Context) (string, error) {
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

// waitListening polls addr until it accepts a TCP connection, p exits, or
// ctx ends.
func waitListening(ctx context.Context, p *process, addr string) error {
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.Close()
		}
		if err := p.exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s on %s: %w", p.name, addr, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
