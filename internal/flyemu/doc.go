// Package flyemu emulates Fly.io's Machines API and Fly's proxy for tests,
// with real Docker containers as machines.
//
// It answers what github.com/superfly/fly-go v0.9.3's flaps client sends,
// with the same paths, query parameters, JSON shapes (fly-go's own types
// are used to decode and encode) and status codes, as far as Fly documents
// them. No Fly API is reachable from CI, so this is what the fly provider is
// tested against.
//
// # Usage
//
//	cli := testenv.Docker(t)
//	emu, err := flyemu.New(ctx, flyemu.Options{
//		Token: "test-token",
//		Apps:  []string{"agents"},
//		// Network "": the emulator makes its own IPv6 network, like 6PN.
//		// RateLimits zero: Fly's documented limits; {Off: true} disables.
//	})
//	require.NoError(t, err)
//	t.Cleanup(func() { _ = emu.Close() })             // registered first, runs last
//	mock := testenv.StartMockContainer(t, cli, emu.Network()) // agents reach http://mock-anthropic:8080
//
//	// flaps takes its base URL from the environment only:
//	t.Setenv("FLY_FLAPS_BASE_URL", emu.APIURL())
//	fc, err := flaps.NewWithOptions(ctx, flaps.NewClientOpts{Tokens: tokens.Parse("test-token")})
//	m, err := fc.Launch(ctx, "agents", fly.LaunchMachineInput{Config: &fly.MachineConfig{
//		Image:    testenv.AgentImage(),
//		Env:      map[string]string{"AGENT_TOKEN": tok, "ANTHROPIC_BASE_URL": "http://mock-anthropic:8080"},
//		Guest:    &fly.MachineGuest{CPUKind: "shared", CPUs: 1, MemoryMB: 1024},
//		Services: []fly.MachineService{{Protocol: "tcp", InternalPort: 8080}},
//		Restart:  &fly.MachineRestart{Policy: fly.MachineRestartPolicyNo},
//	}})
//	err = fc.Wait(ctx, "agents", m.ID, flaps.WithWaitStates("started"))
//
//	// Fly's proxy: one address for the app, the machine picked by header.
//	req, _ := http.NewRequest("GET", emu.ProxyURL()+"/health", nil)
//	req.Header.Set("fly-force-instance-id", m.ID)
//
//	// Fly's private network: private_ip, IPv6 on the emulator's network.
//	got, _ := fc.Get(ctx, "agents", m.ID) // "http://[" + got.PrivateIP + "]:8080"
//
// A process-wide FLY_FLAPS_BASE_URL cannot point two clients at two
// emulators; a client can instead pass a flaps.NewClientOpts.Transport
// that sends every request to APIURL's host.
//
// # Machines
//
// A machine is a Docker container running config.image (never pulled: it
// must be in the local engine; an unknown image fails the create with 422)
// with config.env plus Fly's FLY_* variables, guest memory and CPUs as
// container limits (CPUs capped at the host's), init exec/entrypoint/cmd,
// and Docker's restart policy mapped from config.restart (Fly's default
// on-failure). Fly's states are kept: created, starting, started, stopping,
// stopped, suspending, suspended, destroying, destroyed (and failed when
// the engine refuses a start). Transitions happen after the API call
// returns, as on Fly: callers wait with /wait.
//
// Suspend is `docker pause`: the processes and their memory stay as they
// were, as with Fly's memory snapshot, and start resumes them. Stop stops
// the container; the next start makes a fresh container from the image,
// because Fly resets a stopped machine's root filesystem. A container that
// exits on its own (restart policy "no") makes its machine stopped with an
// exit event; a container removed behind the emulator's back makes it
// destroyed. A destroyed machine is still returned by GET (state
// destroyed), by list with include_deleted=true and by /wait for
// destroyed; every other call on it gets 404.
//
// Leases: POST /lease acquires (409 while another is active), with the
// fly-machine-lease-nonce header refreshes; DELETE releases; a leased
// machine refuses update, start, stop, suspend and destroy without its
// nonce (409). Rate limits ([RateLimits]) answer 429 with Retry-After.
//
// The proxy ([Emulator.ProxyURL]) routes a request with fly-force-instance-id
// to that machine's first service's internal_port, streaming unbuffered
// and full duplex; an unknown or destroyed machine gets 404, one not
// started 503 (unless its service has autostart: then it is started
// first), an unreachable port 502. Without the header, the first started
// machine serves.
//
// Everything the emulator creates (containers, its network) carries the
// label [LabelEmulator] = [Emulator.ID]; Close removes it all.
//
// # Test hooks
//
// [Emulator.Calls] counts Machines API calls per route and
// [Emulator.Requests] returns every request received (headers and bodies),
// to count calls per conversation and to prove that no API key ever
// reached the Machines API. [Emulator.DestroyBehindBack] and
// [Emulator.Crash] make a machine vanish or die without any API call;
// [Emulator.State] and [Emulator.ContainerID] look inside.
//
// # Not emulated
//
// Volumes, config.files, multi-container machines (all refused with 422),
// exec, restart, signal, cordon, apps and secrets APIs (404), autostop,
// the shared-CPU quota, and the wait parameters instance_id, version and
// from_event_id (accepted, not checked).
package flyemu
