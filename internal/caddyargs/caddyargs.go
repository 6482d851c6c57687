// Package caddyargs reads the arguments of Caddyfile subdirectives the same
// way for the app, the handler and every provider's guest module: one
// value, a duration, a limit, a key and value; and the block of
// subdirectives itself.
package caddyargs

import (
	"slices"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// One reads the single argument of the current subdirective.
func One(d *caddyfile.Dispenser) (string, error) {
	var v string
	if !d.AllArgs(&v) {
		return "", d.ArgErr()
	}
	return v, nil
}

// String reads the single argument of the current subdirective into *dst.
func String(d *caddyfile.Dispenser, dst *string) error {
	v, err := One(d)
	if err != nil {
		return err
	}
	*dst = v
	return nil
}

// Duration reads the single duration argument of the current subdirective
// (e.g. 30m or 1d); zero is accepted only with allowZero.
func Duration(d *caddyfile.Dispenser, allowZero bool) (caddy.Duration, error) {
	name := d.Val()
	v, err := One(d)
	if err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur < 0 || (dur == 0 && !allowZero) {
		return 0, d.Errf("%s %q: want a duration such as 30m", name, v)
	}
	return caddy.Duration(dur), nil
}

// Limit reads a limit: a whole number, 0 for no limit.
func Limit(d *caddyfile.Dispenser) (int, error) {
	name := d.Val()
	v, err := One(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, d.Errf("%s %q: want a whole number, 0 for no cap", name, v)
	}
	return n, nil
}

// KeyValue reads the "<key> <value>" arguments of the current
// subdirective (env, label) into *m, refusing a key given twice.
func KeyValue(d *caddyfile.Dispenser, m *map[string]string) error {
	sub := d.Val()
	var k, v string
	if !d.AllArgs(&k, &v) {
		return d.ArgErr()
	}
	if *m == nil {
		*m = map[string]string{}
	}
	if _, dup := (*m)[k]; dup {
		return d.Errf("%s %s already specified", sub, k)
	}
	(*m)[k] = v
	return nil
}

// Subdirectives consumes the directive's name (which takes no arguments)
// and calls fn for each subdirective of its block, refusing one given
// twice unless it is in repeatable.
func Subdirectives(d *caddyfile.Dispenser, repeatable []string, fn func(sub string) error) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] && !slices.Contains(repeatable, sub) {
			return d.Errf("%s already specified", sub)
		}
		seen[sub] = true
		if err := fn(sub); err != nil {
			return err
		}
	}
	return nil
}
