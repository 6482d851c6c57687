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
//	netName := testenv.TestNetwork(t, cli)        // machines join it
//	testenv.StartMockContainer(t, cli, netName)    // the Anthropic mock, if turns run
//	emu, err := flyemu.New(ctx, flyemu.Options{
//		Token:   "test-token",
//		Apps:    []string{"agents"},
//		Network: netName,
//		Docker:  cli,
//	})
//	require.NoError(t, err)
//	t.Cleanup(func() { _ = emu.Close() })
//
//	// flaps takes its base URL from the environment only:
//	t.Setenv("FLY_FLAPS_BASE_URL", emu.APIURL())
//	fc, err := flaps.NewWithOptions(ctx, flaps.NewClientOpts{Tokens: tokens.Parse("test-token")})
//	m, err := fc.Launch(ctx, "agents", fly.LaunchMachineInput{Config: &fly.MachineConfig{
//		Image: testenv.AgentImage(),
//		Services: []fly.MachineService{{Protocol: "tcp", InternalPort: 8080}},
//	}})
//	err = fc.Wait(ctx, "agents", m.ID, flaps.WithWaitStates("started"))
//
//	// Fly's proxy: one address for the app, the machine picked by header.
//	req, _ := http.NewRequest("GET", emu.ProxyURL()+"/health", nil)
//	req.Header.Set("fly-force-instance-id", m.ID)
//
//	// Fly's private network: the machine's private_ip on Options.Network.
//	got, _ := fc.Get(ctx, "agents", m.ID) // "http://" + net.JoinHostPort(got.PrivateIP, "8080")
//
// A process-wide FLY_FLAPS_BASE_URL cannot serve two emulators at once; a
// client can instead keep the default base URL and pass a
// [flaps.NewClientOpts].Transport that sends every request to APIURL.
//
// # Machines
//
// A machine is a Docker container running config.image (never pulled: it
// must be in the local engine) with config.env, guest memory and CPUs as
// container limits, init overrides, and Docker's restart policy mapped from
// config.restart. Fly's states are kept: created, starting, started,
// stopping, stopped, suspending, suspended, destroying, destroyed (and
// failed when the engine refuses a start). Every transition happens after
// the API call returns, as on Fly: callers wait with /wait.
//
// Suspend is `docker pause`: the processes and their memory stay as they
// were, as with Fly's memory snapshot, and start resumes them. Stop stops
// the container; the next start makes a fresh container from the image,
// because Fly resets a stopped machine's root filesystem.
//
// A container that exits on its own (restart policy "no") makes its machine
// stopped, with an exit event; a container removed behind the emulator's
// back makes it destroyed.
//
// Everything the emulator creates carries the label [LabelEmulator] = the
// emulator's id; Close removes it all.
//
// # Test hooks
//
// [Emulator.Calls] counts Machines API calls per route and
// [Emulator.Requests] returns every request received (headers and bodies),
// to count calls per conversation and to prove that no API key ever
// reached the Machines API. [Emulator.DestroyBehindBack] and
// [Emulator.Crash] make a machine die without any API call.
//
// See README-level deviations from Fly in the [Options] and handler
// documentation: no volumes, files or update of a machine's config beyond
// what flaps' Update sends, IPv4 private addresses unless the network has
// IPv6, and the image must be local.
package flyemu
