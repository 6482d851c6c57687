// harness.mjs: the official @vercel/sandbox SDK (pinned in package.json)
// driving the Vercel Sandbox emulator through every call the SDK makes that
// the emulator models, so that the emulator answers what the SDK sends and
// the SDK's own validators (zod) accept every answer. Run by
// internal/vercelemu/sdk_test.go with:
//
//   EMU_API      the emulator's API base URL (stands in for https://vercel.com/api)
//   EMU_TOKEN, EMU_TEAM, EMU_PROJECT   the credentials the emulator accepts
//   SERVER_BIN   a static HTTP server binary (mock-anthropic) to serve a port
//
// It prints one JSON object of what it observed; any unexpected error ends
// it with a non-zero exit and the error on stderr.
import { readFile } from "node:fs/promises";
import { APIError, Sandbox, Snapshot } from "@vercel/sandbox";

const api = process.env.EMU_API;
// The SDK's base URL is fixed; its fetch option is how a test points it
// elsewhere.
const fetchEmu = (url, init) => fetch(String(url).replace("https://vercel.com/api", api), init);
const creds = {
  token: process.env.EMU_TOKEN,
  teamId: process.env.EMU_TEAM,
  projectId: process.env.EMU_PROJECT,
  fetch: fetchEmu,
};

const out = {};

// statusOf runs fn and returns the HTTP status of the APIError it throws.
async function statusOf(fn) {
  try {
    await fn();
    return 0;
  } catch (err) {
    if (err instanceof APIError) return err.response.status;
    throw err;
  }
}

async function run(sandbox, cmd, args, opts = {}) {
  const res = await sandbox.runCommand({ cmd, args, ...opts });
  return { exitCode: res.exitCode, stdout: await res.stdout(), stderr: await res.stderr() };
}

const name = "sdk-" + Math.random().toString(16).slice(2, 8);
const sandbox = await Sandbox.create({
  ...creds,
  name,
  persistent: true,
  ports: [3000],
  timeout: 120_000,
  resources: { vcpus: 1 },
  env: { GREETING: "hello" },
  tags: { suite: "sdk" },
});
const firstSession = sandbox.currentSession().sessionId;
out.created = {
  name: sandbox.name,
  status: sandbox.status,
  persistent: sandbox.persistent,
  memory: sandbox.memory,
  cwd: sandbox.cwd,
  routes: sandbox.routes.length,
  tags: sandbox.tags,
};

out.whoami = await run(sandbox, "sh", ["-c", 'id -un; echo "$GREETING $EXTRA"'], { env: { EXTRA: "sdk" } });
out.sudo = await run(sandbox, "id", ["-un"], { sudo: true });
out.failing = await run(sandbox, "sh", ["-c", "echo bad >&2; exit 7"]);

await sandbox.writeFiles([{ path: "notes/hello.txt", content: Buffer.from("written by the sdk") }]);
out.read = (await sandbox.readFileToBuffer({ path: "notes/hello.txt" }))?.toString();
out.readMissing = await sandbox.readFileToBuffer({ path: "notes/missing.txt" });
await sandbox.mkDir("made");
out.madeDir = (await run(sandbox, "test", ["-d", "/vercel/sandbox/made"])).exitCode;

// A detached server on the routed port, its logs, the route, a kill.
await sandbox.writeFiles([{ path: "server", content: await readFile(process.env.SERVER_BIN), mode: 0o755 }]);
const server = await sandbox.runCommand({ cmd: "./server", args: ["-addr", "0.0.0.0:3000"], detached: true });
out.detachedExitCode = server.exitCode;
const logs = server.logs();
for await (const line of logs) {
  if (line.data.includes("LISTENING")) break;
}
logs.close();
const routeURL = sandbox.routes.find((r) => r.port === 3000).url;
out.routeStatus = (await fetch(routeURL + "/_mock/requests")).status;
await server.kill("SIGTERM");
out.killedExitCode = (await server.wait()).exitCode;
out.fetchedCommand = (await sandbox.getCommand(server.cmdId)).cmdId === server.cmdId;

const before = sandbox.currentSession().timeout;
await sandbox.extendTimeout(60_000);
out.extended = sandbox.currentSession().timeout - before;

const listed = await Sandbox.list({ ...creds, tags: { suite: "sdk" } });
out.listed = listed.sandboxes.map((s) => s.name);

// Names are unique in a project: a second create of the name is refused
// (the SDK throws the APIError; it retries only 429s and 5xx), and the
// sandbox of the name is left as it was.
out.takenName = await statusOf(() => Sandbox.create({ ...creds, name, persistent: true, tags: { suite: "sdk-dup" } }));
out.takenNameKept = (await Sandbox.get({ ...creds, name })).tags;

// Stop; the next command resumes the persistent sandbox by itself (the
// SDK's withResume on 410 sandbox_stopped), with its files.
const stopped = await sandbox.stop();
out.stopStatus = stopped.status;
out.afterStop = await run(sandbox, "cat", ["notes/hello.txt"]);
out.resumedNewSession = sandbox.currentSession().sessionId !== firstSession;
const got = await Sandbox.get({ ...creds, name });
out.getStatus = got.status;

// A snapshot stops the session; a new sandbox starts from it.
const snap = await sandbox.snapshot({ expiration: 0 });
out.snapshot = { status: snap.status, source: snap.sourceSessionId === sandbox.currentSession().sessionId, expires: snap.expiresAt ?? null };
out.snapshotsListed = (await Snapshot.list({ ...creds, name })).snapshots.length;
out.snapshotGot = (await Snapshot.get({ ...creds, snapshotId: snap.snapshotId })).status;
const child = await Sandbox.create({ ...creds, source: { type: "snapshot", snapshotId: snap.snapshotId }, persistent: false });
out.child = { read: (await child.readFileToBuffer({ path: "notes/hello.txt" }))?.toString(), source: child.sourceSnapshotId === snap.snapshotId };
await child.delete();

await sandbox.update({ tags: { suite: "sdk-updated" } });
out.updatedTags = sandbox.tags;
await sandbox.delete();
out.deletedGet = await statusOf(() => Sandbox.get({ ...creds, name }));
out.badToken = await statusOf(() => Sandbox.list({ ...creds, token: "wrong-token" }));
out.badProject = await statusOf(() => Sandbox.create({ ...creds, projectId: "prj_missing" }));
out.missingSnapshot = await statusOf(() => Sandbox.create({ ...creds, source: { type: "snapshot", snapshotId: "snap_missing" } }));

console.log(JSON.stringify(out));
