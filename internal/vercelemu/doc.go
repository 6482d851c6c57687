// Package vercelemu emulates the Vercel Sandbox REST API and the route
// proxy of its sandboxes' ports, for tests, with Docker containers as
// sandboxes.
//
// It answers what the official TypeScript SDK @vercel/sandbox 3.5.0
// sends, with the same paths, query parameters, JSON shapes and status
// codes (the SDK's dist/api-client and its validators; the error codes its
// Sandbox class acts on; Vercel's error pages for SANDBOX_STOPPED and
// SANDBOX_STOPPING). The SDK itself drives it in sdk_test.go, so the
// emulator cannot drift from the API the SDK speaks; the Go client in
// providers/vercel/sandboxapi, which the vercel provider uses, drives it in
// vercelemu_test.go. No Vercel API is reachable from CI.
//
// # Usage
//
//	emu, err := vercelemu.New(ctx, vercelemu.Options{
//		Token: "test-token", TeamID: "team_x", Projects: []string{"prj_x"},
//		Network: net, // the Docker network sandboxes join (the Anthropic mock's)
//	})
//	t.Cleanup(func() { _ = emu.Close() })
//	api, _ := sandboxapi.New(sandboxapi.Options{BaseURL: emu.APIURL(), Token: "test-token", TeamID: "team_x"})
//	sb, _ := api.CreateSandbox(ctx, sandboxapi.CreateSandboxRequest{ProjectID: "prj_x", Ports: []int{8080}})
//	// sb.Routes[0].URL is ProxyURL()/<subdomain>: the stand-in for
//	// https://<subdomain>.vercel.run, plain HTTP on loopback.
//
// The SDK's base URL is fixed (https://vercel.com/api): its fetch option
// rewrites the URLs to APIURL (see testdata/sdk/harness.mjs).
//
// # Sandboxes and sessions
//
// A sandbox is a named, durable identity with tags (at most five), an
// environment every command inherits, routed ports (at most fifteen) and a
// session timeout; a session is one run of it: a container. The first
// session starts from the base image ([Options.Image], a plain Linux image
// to which the emulator adds the user vercel-sandbox and /vercel/sandbox,
// as Vercel's image has them), or from a snapshot. Create and resume
// answer once the session runs. A persistent sandbox (the default) keeps
// its container's file system between sessions, as Vercel restores it from
// an automatic snapshot; a non-persistent one starts every session
// afresh from its source. A snapshot is a Docker image committed from a
// session's container; taking one stops the session.
//
// Session statuses are Vercel's: pending, running, stopping, stopped,
// failed, snapshotting. Calls needing a running session answer 422
// sandbox_stopping or sandbox_snapshotting while it is on its way down and
// 410 sandbox_stopped once it is; a resume (GET ?resume=true) while it is
// stopping waits for the stop (the SDK resumes at once on a 422). A session's timeout really stops it: a timer
// halts it when startedAt+timeout passes, with no requestedStopAt (a stop
// asked for through the API records one); extend-timeout moves the
// deadline, within [Options.MaxTimeout] in all (400 beyond). Commands run
// with docker exec as vercel-sandbox, or root with sudo; their output is
// kept (the last MiB) for the logs and wait streams. The file API runs tar
// and cat as vercel-sandbox, so its permissions apply.
//
// Errors are {"error": {"code", "message"}}: 403 for a token other than
// [Options.Token] (with "invalidToken": true, as Vercel answers) or a team
// other than [Options.TeamID]; 404 for an unknown project, sandbox,
// session, command or snapshot; 409 for a name taken; 410 and 422 as
// above; 429 with Retry-After when the vCPU allocation rate
// ([RateLimits]) is exceeded or [Emulator.Throttle] asks for it.
//
// The route proxy ([Emulator.ProxyURL]) sends /<subdomain>/... (or a Host
// whose first label is the subdomain) to the sandbox's container port,
// streaming unbuffered and full duplex; an unknown subdomain gets 404, a
// sandbox whose session does not run 410, a port nothing listens on 502.
// These answers come from the proxy, not from what runs in the sandbox.
//
// Everything the emulator creates (containers, snapshot images) carries
// the label [LabelEmulator] = [Emulator.ID]; Close removes it all.
//
// # Test hooks
//
// [Emulator.Requests] returns every request received (headers, bodies:
// uploads in part) and [Emulator.Calls] counts them per route, to count
// calls per conversation and to prove no API key reached the API.
// [Emulator.Expire] ends a session as its timeout would, now, so tests do
// not race the clock; [Emulator.Crash] kills a sandbox's container behind
// the API's back (its session fails); [Emulator.Throttle] answers the next
// requests with 429. [Emulator.Sandboxes], [Emulator.Status],
// [Emulator.Tags], [Emulator.Snapshots] and [Emulator.ContainerID] look
// inside.
//
// # Not emulated
//
// Git and tarball sources, images and runtimes (every sandbox starts from
// the base image or a snapshot), drives and mounts, forks, network
// policies, interactive shells, regions other than iad1, the automatic
// snapshot a persistent sandbox's stop reports (the container is kept
// instead), snapshot expiry by time except at use, and usage figures
// (activeCpuDurationMs, network transfer are zero).
package vercelemu
