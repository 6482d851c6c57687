// Command mock-anthropic serves the scripted Anthropic Messages API mock of
// package anthropictest as a stand-alone process, for tests that run the
// Claude Code CLI in a container. Tests script it and read what it received
// through the control API under /_mock/ (see anthropictest.Remote).
//
// Usage:
//
//	mock-anthropic [-addr 127.0.0.1:8080] [-script script.json] [-log requests.jsonl]
//
// It prints "LISTENING <addr>" once it accepts connections and shuts down
// gracefully on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

// shutdownTimeout bounds the wait for running responses on shutdown.
const shutdownTimeout = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "mock-anthropic:", err)
		}
		os.Exit(2)
	}
}

// run serves the mock until ctx is done.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mock-anthropic", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on (host:port; port 0 picks a free one)")
	scriptPath := fs.String("script", "", "JSON script file to start with (format of mock_anthropic.py)")
	logPath := fs.String("log", "", "append a JSONL log of requests and responses to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	var script anthropictest.Script
	if *scriptPath != "" {
		data, err := os.ReadFile(*scriptPath)
		if err != nil {
			return fmt.Errorf("read script: %w", err)
		}
		if script, err = anthropictest.ParseScript(data); err != nil {
			return fmt.Errorf("script %s: %w", *scriptPath, err)
		}
	}
	srv := anthropictest.New(script)
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("open log: %w", err)
		}
		defer func() { _ = f.Close() }()
		srv.SetLog(f)
	}
	if err := srv.Start(*addr); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(stdout, "LISTENING %s\n", srv.Addr()); err != nil {
		srv.Close()
		return fmt.Errorf("write to stdout: %w", err)
	}

	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return srv.Shutdown(sctx)
}
