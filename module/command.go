package module

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/agcluster/caddy-agcluster/session"
	"github.com/agcluster/caddy-agcluster/usage"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "agcluster",
		Usage: "sessions | session <id> | stop <id> | pool | usage [--days N] | providers  [--address <admin>] [--json]",
		Short: "Manages agcluster sessions through a running Caddy's admin API",
		Long: `
Talks to the admin API of a running Caddy with the agcluster app:

  caddy agcluster sessions          every conversation: id, owner prefix, config, provider, state, idle, turns
  caddy agcluster session <id>      one conversation
  caddy agcluster stop <id>         stop a conversation and remove its agent and workspace
  caddy agcluster pool              the warm pool per configuration
  caddy agcluster usage [--days N]  usage per day (or --group-by config|provider|owner) over the last N days
  caddy agcluster providers         the providers, their health and agents

--address is the admin endpoint (default ` + caddy.DefaultAdminListen + `, or the admin
address of --config); --json prints the admin API's JSON for scripts.`,
		CobraFunc: agclusterCommand,
	})
}

// cliOptions are the flags every subcommand shares.
type cliOptions struct {
	address, config, adapter string
	json                     bool
}

// agclusterCommand builds `caddy agcluster` and its subcommands.
func agclusterCommand(cmd *cobra.Command) {
	o := &cliOptions{}
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.address, "address", "", "Address of Caddy's admin API (default "+caddy.DefaultAdminListen+")")
	pf.StringVarP(&o.config, "config", "c", "", "Configuration file whose admin address to use (if --address is not given)")
	pf.StringVarP(&o.adapter, "adapter", "a", "", "Name of the config adapter of --config")
	pf.BoolVar(&o.json, "json", false, "Print JSON instead of a table")
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	var days int
	var groupBy string
	usageCmd := &cobra.Command{Use: "usage", Short: "Usage per day over the last N days", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.usage(cmd.OutOrStdout(), days, groupBy) }}
	usageCmd.Flags().IntVar(&days, "days", 7, "How many days back, today included")
	usageCmd.Flags().StringVar(&groupBy, "group-by", usage.ByDay, "day, config, provider or owner")
	cmd.AddCommand(
		&cobra.Command{Use: "sessions", Short: "List every conversation", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return o.sessions(cmd.OutOrStdout(), "") }},
		&cobra.Command{Use: "session <id>", Short: "Show one conversation", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error { return o.sessions(cmd.OutOrStdout(), args[0]) }},
		&cobra.Command{Use: "stop <id>", Short: "Stop a conversation and remove its agent and workspace", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error { return o.stop(cmd.OutOrStdout(), args[0]) }},
		&cobra.Command{Use: "pool", Short: "Show the warm pool", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return o.pool(cmd.OutOrStdout()) }},
		usageCmd,
		&cobra.Command{Use: "providers", Short: "Show the providers and their health", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return o.providers(cmd.OutOrStdout()) }},
	)
	for _, c := range cmd.Commands() {
		c.SilenceUsage = true
	}
}

// request calls the admin API. An unreachable endpoint and an app that
// is not running get errors that say so.
func (o *cliOptions) request(method, uri string) ([]byte, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(o.address, nil, o.config, o.adapter)
	if err != nil {
		return nil, fmt.Errorf("finding the admin API address: %w", err)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, nil, nil)
	if err != nil {
		if strings.Contains(err.Error(), "performing request") {
			return nil, fmt.Errorf("cannot reach Caddy's admin API at %s: is Caddy running, with its admin endpoint on (not `admin off`)? Give its address with --address. (%w)", addr, err)
		}
		return nil, fmt.Errorf("admin API at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the admin API's answer: %w", err)
	}
	return body, nil
}

// get fetches uri and decodes it into v; with --json it prints the JSON
// as it came and returns printed true.
func (o *cliOptions) get(w io.Writer, uri string, v any) (printed bool, err error) {
	body, err := o.request(http.MethodGet, uri)
	if err != nil {
		return false, err
	}
	if o.json {
		_, err = w.Write(body)
		return true, err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return false, fmt.Errorf("the admin API's answer to %s: %w", uri, err)
	}
	return false, nil
}

// table writes rows under a header, aligned.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range append([][]string{header}, rows...) {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// sessions lists the conversations, or shows the one with id.
func (o *cliOptions) sessions(w io.Writer, id string) error {
	var list []adminSession
	body, err := o.request(http.MethodGet, "/agcluster/sessions")
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return fmt.Errorf("the admin API's session list: %w", err)
	}
	if id != "" {
		return o.session(w, list, id)
	}
	if o.json {
		_, err := w.Write(body)
		return err
	}
	rows := make([][]string, 0, len(list))
	for _, s := range list {
		rows = append(rows, []string{s.ID, s.Owner, s.ConfigID, s.Provider, s.Status, idleFor(s), strconv.FormatInt(s.Turns, 10)})
	}
	return table(w, []string{"ID", "OWNER", "CONFIG", "PROVIDER", "STATE", "IDLE", "TURNS"}, rows)
}

// session shows one conversation of list.
func (o *cliOptions) session(w io.Writer, list []adminSession, id string) error {
	for _, s := range list {
		if s.ID != id {
			continue
		}
		if o.json {
			return json.NewEncoder(w).Encode(s)
		}
		return table(w, []string{"FIELD", "VALUE"}, [][]string{
			{"id", s.ID}, {"owner", s.Owner}, {"conversation", s.Conversation}, {"config", s.ConfigID},
			{"provider", s.Provider}, {"instance", s.InstanceID}, {"state", s.Status},
			{"created", s.Created.UTC().Format(time.RFC3339)}, {"last_used", s.LastUsed.UTC().Format(time.RFC3339)},
			{"idle", idleFor(s)}, {"turns", strconv.FormatInt(s.Turns, 10)},
		})
	}
	return fmt.Errorf("no session %q (caddy agcluster sessions lists them)", id)
}

// idleFor is how long a session has had no turn ("-" while one runs).
func idleFor(s adminSession) string {
	if s.Busy || s.Status == session.StatusBusy {
		return "-"
	}
	return time.Since(s.LastUsed).Truncate(time.Second).String()
}

// stop removes a conversation.
func (o *cliOptions) stop(w io.Writer, id string) error {
	if _, err := o.request(http.MethodDelete, "/agcluster/sessions/"+url.PathEscape(id)); err != nil {
		return err
	}
	if o.json {
		return json.NewEncoder(w).Encode(map[string]any{"id": id, "stopped": true})
	}
	_, err := fmt.Fprintf(w, "session %s stopped and removed\n", id)
	return err
}

// pool shows the warm pool.
func (o *cliOptions) pool(w io.Writer) error {
	var stats []session.PoolStats
	if printed, err := o.get(w, "/agcluster/pool", &stats); printed || err != nil {
		return err
	}
	if len(stats) == 0 {
		_, err := fmt.Fprintln(w, "no warm pool configured")
		return err
	}
	rows := make([][]string, 0, len(stats))
	for _, s := range stats {
		rows = append(rows, []string{s.ConfigID, strconv.Itoa(s.Size), strconv.Itoa(s.Target), strconv.Itoa(s.Ready),
			strconv.Itoa(s.Creating), strconv.FormatInt(s.Hits, 10), strconv.FormatInt(s.Misses, 10)})
	}
	return table(w, []string{"CONFIG", "SIZE", "TARGET", "READY", "CREATING", "HITS", "MISSES"}, rows)
}

// usage shows the usage of the last days.
func (o *cliOptions) usage(w io.Writer, days int, groupBy string) error {
	if days < 1 {
		return errors.New("--days must be at least 1")
	}
	var rep usageReport
	q := url.Values{"days": {strconv.Itoa(days)}, "group_by": {groupBy}}
	if printed, err := o.get(w, "/agcluster/usage?"+q.Encode(), &rep); printed || err != nil {
		return err
	}
	rows := make([][]string, 0, len(rep.Rows)+1)
	for _, r := range append(rep.Rows, usage.Row{Group: "total", Totals: rep.Total}) {
		rows = append(rows, []string{r.Group, strconv.FormatInt(r.Turns, 10), strconv.FormatInt(r.Conversations, 10),
			strconv.FormatInt(r.InputTokens, 10), strconv.FormatInt(r.OutputTokens, 10),
			strconv.FormatInt(r.CacheReadTokens, 10), strconv.FormatInt(r.CacheWriteTokens, 10),
			fmt.Sprintf("%.4f", r.CostUSD), fmt.Sprintf("%.2f", r.AgentSeconds/3600)})
	}
	fmt.Fprintf(w, "usage %s to %s (UTC) by %s\n", rep.From, rep.To, rep.GroupBy)
	return table(w, []string{strings.ToUpper(rep.GroupBy), "TURNS", "CONVERSATIONS", "INPUT", "OUTPUT", "CACHE_READ", "CACHE_WRITE", "COST_USD", "AGENT_HOURS"}, rows)
}

// providers shows the providers.
func (o *cliOptions) providers(w io.Writer) error {
	var list []providerStatus
	if printed, err := o.get(w, "/agcluster/providers", &list); printed || err != nil {
		return err
	}
	rows := make([][]string, 0, len(list))
	for _, p := range list {
		rows = append(rows, []string{p.Name, p.Kind, strconv.FormatBool(p.Default), p.Health,
			strconv.Itoa(p.Live), strconv.Itoa(p.Sleeping), strings.Join(p.Capabilities, ",")})
	}
	return table(w, []string{"NAME", "KIND", "DEFAULT", "HEALTH", "LIVE", "SLEEPING", "CAPABILITIES"}, rows)
}
