// AgentContainer: one Durable Object per agent, named by the agent's id
// (the session id), holding the agent's metadata and running its
// container. A Cloudflare container's disk is gone when it stops, so the
// object keeps the agent's disk (its workspace and the CLI's state) in R2:
// it saves a snapshot (the agent's GET /snapshot) after every request that
// changes it and before the container stops, and restores it (PUT
// /snapshot, while the agent waits for it: AGENT_RESTORE=1) into every new
// container before the agent starts its CLI.

import { Container } from "@cloudflare/containers";

import {
	AGENT_HEADER,
	HTTPError,
	WORKER_AUTH_HEADER,
	BadRequest,
	answerError,
	bearer,
	error,
	json,
	readJSON,
} from "./http";
import { indexOf } from "./registry";
import type { AgentRecord, CreateRequest, Env, Meta, SleepRequest, WakeRequest } from "./types";

/** The agent server's port in the agent image (AGENT_ADDR=:8080). */
const AGENT_PORT = 8080;

/** The agent's state directory in the agent image, made for a volume. */
const STATE_DIR = "/state";

/** Environment the gateway may not set: credentials (keys travel with each
 * query) and the variables the Worker sets itself. */
const FORBIDDEN_ENV = [
	"ANTHROPIC_API_KEY",
	"ANTHROPIC_AUTH_TOKEN",
	"CLAUDE_CODE_OAUTH_TOKEN",
	"AGENT_TOKEN",
	"AGENT_CONFIG",
	"AGENT_ADDR",
	"AGENT_WORKSPACE",
	"AGENT_STATE_DIR",
	"AGENT_RESTORE",
];

/** Agent requests that change its disk: a snapshot follows each. */
const CHANGES_DISK = [/^POST \/query$/, /^POST \/tool_results$/, /^PUT \/files\//, /^PUT \/binding$/];

/** snapshotKey is where an agent's snapshot is kept in R2. */
function snapshotKey(id: string): string {
	return `snapshots/${id}.tar.gz`;
}

/** AgentContainer is one agent: its metadata and its container. */
export class AgentContainer extends Container<Env> {
	defaultPort = AGENT_PORT;
	// Longer than any turn (30 minutes by default): the gateway puts idle
	// agents to sleep itself; this only catches agents a gateway forgot.
	sleepAfter = "2h";
	// The agent's token while its container runs: in memory only, given by
	// the gateway with every start and every relayed request.
	private token?: string;
	// Requests being relayed: the container is not put to sleep under them.
	private inflight = 0;
	// Snapshots are taken one at a time, in order.
	private snapshots: Promise<unknown> = Promise.resolve();

	/** box is the object's container (the runtime gives every object of
	 * a class with a container one). */
	private get box(): NonNullable<DurableObjectState["container"]> {
		const c = this.ctx.container;
		if (!c) {
			throw new HTTPError(500, "no_container", "this Durable Object has no container: check wrangler.jsonc");
		}
		return c;
	}

	/** fetch serves /v1/agents/{id}[/...]: the Worker checked the secret and the id. */
	override async fetch(req: Request): Promise<Response> {
		try {
			const url = new URL(req.url);
			const [, , , rawId, ...rest] = url.pathname.split("/");
			const id = decodeURIComponent(rawId);
			if (rest[0] === "agent") {
				return await this.relay(req, "/" + rest.slice(1).join("/") + url.search);
			}
			const provider = url.searchParams.get("provider") ?? "";
			switch (`${req.method} ${rest.join("/")}`) {
				case "PUT ":
					return await this.create(id, await readJSON<CreateRequest>(req));
				case "GET ":
					return json(200, this.record(await this.own(provider)));
				case "DELETE ":
					return await this.remove(provider);
				case "POST sleep":
					return await this.sleep(await readJSON<SleepRequest>(req));
				case "POST wake":
					return await this.wake(await readJSON<WakeRequest>(req));
			}
			return error(404, "not_found", `no such route: ${req.method} ${url.pathname}`);
		} catch (e) {
			return answerError(e);
		}
	}

	/** describe is the agent's record (undefined when there is none, or it is another provider's). */
	async describe(provider: string): Promise<AgentRecord | undefined> {
		const m = await this.meta();
		return m && m.provider === provider ? this.record(m) : undefined;
	}

	// ---- lifecycle ----

	/** create records the agent and starts its container with an empty disk. */
	private async create(id: string, body: CreateRequest): Promise<Response> {
		checkCreate(body);
		if (await this.meta()) {
			throw new HTTPError(409, "exists", `agent ${id} exists already`);
		}
		const m: Meta = {
			id,
			provider: body.provider,
			session_id: body.session_id ?? "",
			owner: body.owner ?? "",
			conversation: body.conversation ?? "",
			config_id: body.config_id ?? "",
			pool: body.pool ?? "",
			created_at: new Date().toISOString(),
			config: body.config || "{}",
			env: body.env ?? {},
		};
		await this.ctx.storage.put("meta", m);
		await this.index(m, "stopped"); // listed from the start: a failed create can be found
		try {
			await this.startAgent(m, body.token);
		} catch (e) {
			await this.forget(m);
			throw e;
		}
		await this.index(m, "running");
		console.log(`agent ${id} created`);
		return json(201, this.record(m, "running"));
	}

	/** sleep saves the agent's disk and removes its container. */
	private async sleep(body: SleepRequest): Promise<Response> {
		let m = await this.own(body.provider);
		if (body.binding && rebinds(m, body.binding)) {
			m = { ...m, ...body.binding, pool: "" };
			await this.ctx.storage.put("meta", m);
		}
		if (this.box.running) {
			const token = body.token || this.token;
			if (!token) {
				throw new HTTPError(400, "no_token", "the agent's token is needed to save its disk");
			}
			await this.checkpoint(token);
			await this.removeContainer();
			console.log(`agent ${m.id} asleep`);
		}
		m = (await this.meta()) ?? m;
		await this.index(m, "stopped");
		return json(200, this.record(m, "stopped"));
	}

	/** wake starts the agent's container again with its disk restored. */
	private async wake(body: WakeRequest): Promise<Response> {
		const m = await this.own(body.provider);
		if (!body.token) {
			throw new BadRequest("token is required");
		}
		if (this.box.running) {
			this.token = body.token;
			return json(200, this.record(m, "running"));
		}
		await this.startAgent(m, body.token);
		await this.index(m, "running");
		console.log(`agent ${m.id} awake`);
		return json(200, this.record(m, "running"));
	}

	/** remove destroys the container, the snapshot and the metadata. */
	private async remove(provider: string): Promise<Response> {
		const m = await this.own(provider);
		const dead = !this.box.running;
		await this.forget(m);
		console.log(`agent ${m.id} destroyed`);
		if (dead) {
			// A container that died is left on the local engine until the
			// object goes (wrangler dev; on Cloudflare nothing is left): reset
			// the object once this answer is out, which removes it.
			this.ctx.waitUntil(scheduler.wait(10).then(() => this.ctx.abort("the agent is destroyed")));
		}
		return new Response(null, { status: 204 });
	}

	/** forget removes everything of the agent. */
	private async forget(m: Meta): Promise<void> {
		await this.ctx.storage.delete("meta");
		await indexOf(this.env, m.provider).remove(m.id);
		await this.removeContainer();
		await this.env.SNAPSHOTS.delete(snapshotKey(m.id));
		this.token = undefined;
	}

	/** startAgent starts the container and restores the agent's disk into it. */
	private async startAgent(m: Meta, token: string): Promise<void> {
		this.token = token;
		const envVars: Record<string, string> = {
			...m.env,
			AGENT_TOKEN: token,
			AGENT_CONFIG: m.config,
			AGENT_STATE_DIR: STATE_DIR,
			AGENT_RESTORE: "1",
		};
		try {
			await this.startAndWaitForPorts({
				ports: AGENT_PORT,
				startOptions: { envVars },
				cancellationOptions: { instanceGetTimeoutMS: 60_000, portReadyTimeoutMS: 120_000 },
			});
			await this.restore(m, token);
		} catch (e) {
			await this.removeContainer();
			if (e instanceof HTTPError) {
				throw e;
			}
			throw new HTTPError(503, "start_failed", `the agent's container did not start: ${(e as Error).message ?? e}`);
		}
	}

	/** restore gives the waiting agent its disk: the last snapshot, or nothing. */
	private async restore(m: Meta, token: string): Promise<void> {
		let body: ReadableStream | null = null;
		let length = 0;
		if (m.snapshot) {
			const obj = await this.env.SNAPSHOTS.get(snapshotKey(m.id));
			if (!obj) {
				throw new HTTPError(410, "snapshot_lost", `the snapshot of agent ${m.id}'s disk is gone`);
			}
			body = obj.body;
			length = obj.size;
		}
		const res = await this.agentFetch("/snapshot", {
			method: "PUT",
			headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/gzip", "Content-Length": String(length) },
			body,
		});
		if (!res.ok) {
			throw new HTTPError(502, "restore_failed", `the agent refused its snapshot: HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
		}
		await res.body?.cancel();
	}

	/** removeContainer destroys the container and returns once it is gone. */
	private async removeContainer(): Promise<void> {
		if (!this.box.running) {
			return;
		}
		// The runtime learns that the container is gone from its monitor:
		// wait for it, so that a wake right after sees it stopped.
		const exited = this.box.monitor().catch(() => undefined);
		await this.box.destroy();
		await exited;
	}

	/** checkpoint saves the agent's disk to R2 (after the ones under way). */
	private checkpoint(token: string): Promise<void> {
		const run = this.snapshots.then(() => this.saveSnapshot(token));
		this.snapshots = run.catch(() => undefined);
		return run;
	}

	/** saveSnapshot stores the agent's GET /snapshot in R2. */
	private async saveSnapshot(token: string): Promise<void> {
		if (!this.box.running) {
			return;
		}
		const res = await this.agentFetch("/snapshot", { headers: { Authorization: `Bearer ${token}` } });
		if (!res.ok || res.body === null) {
			throw new HTTPError(502, "snapshot_failed", `the agent's snapshot failed: HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
		}
		const m = await this.meta();
		if (!m) {
			await res.body.cancel();
			return;
		}
		const obj = await this.env.SNAPSHOTS.put(snapshotKey(m.id), res.body, { httpMetadata: { contentType: "application/gzip" } });
		const now = (await this.meta()) ?? m;
		await this.ctx.storage.put("meta", { ...now, snapshot: { at: new Date().toISOString(), bytes: obj.size } });
	}

	// ---- the relay ----

	/** relay passes a request to the agent and its answer back, unchanged and unbuffered. */
	private async relay(req: Request, path: string): Promise<Response> {
		if (!(await this.meta())) {
			return error(404, "not_found", "no such agent");
		}
		if (!this.box.running) {
			return error(503, "agent_stopped", "the agent's container is not running (asleep or stopped): wake it first");
		}
		const token = bearer(req.headers.get("Authorization"));
		if (token) {
			this.token = token;
		}
		const headers = new Headers(req.headers);
		headers.delete(WORKER_AUTH_HEADER);
		this.begin();
		let res: Response;
		try {
			res = await this.agentFetch(path, { method: req.method, headers, body: req.body, redirect: "manual" });
		} catch (e) {
			this.end();
			return error(502, "agent_unreachable", `the agent did not answer: ${(e as Error).message ?? e}`);
		}
		const saves = token !== null && res.ok && res.headers.get(AGENT_HEADER) !== null && changesDisk(req.method, path);
		if (res.body === null || !saves) {
			return this.passThrough(res, saves ? token : null);
		}
		if ((res.headers.get("Content-Type") ?? "").startsWith("text/event-stream")) {
			return this.passThrough(res, token);
		}
		// A small answer (a file written, a binding set): the change is saved
		// before it is acknowledged.
		const body = await res.arrayBuffer();
		try {
			await this.checkpoint(token!);
		} catch (e) {
			console.error(`agent snapshot failed: ${(e as Error).message}`);
		} finally {
			this.end();
		}
		return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
	}

	/** passThrough streams res to the client; then, with a token, the disk is saved. */
	private passThrough(res: Response, saveWith: string | null): Response {
		if (res.body === null) {
			this.end();
			return res;
		}
		const { readable, writable } = new IdentityTransformStream();
		const done = res.body.pipeTo(writable).catch(() => undefined);
		this.ctx.waitUntil(
			done.then(async () => {
				try {
					if (saveWith) {
						await this.checkpoint(saveWith);
					}
				} catch (e) {
					console.error(`agent snapshot failed: ${(e as Error).message}`);
				} finally {
					this.end();
				}
			}),
		);
		return new Response(readable, { status: res.status, statusText: res.statusText, headers: res.headers });
	}

	private begin(): void {
		this.inflight++;
		this.renewActivityTimeout();
	}

	private end(): void {
		this.inflight = Math.max(0, this.inflight - 1);
		this.renewActivityTimeout();
	}

	/** agentFetch sends a request to the agent server in the container. */
	private agentFetch(path: string, init: RequestInit): Promise<Response> {
		return this.box.getTcpPort(AGENT_PORT).fetch("http://agent" + path, init);
	}

	// ---- the Container's hooks ----

	/** onActivityExpired puts an agent no gateway put to sleep to sleep, disk saved. */
	override async onActivityExpired(): Promise<void> {
		if (this.inflight > 0) {
			this.renewActivityTimeout();
			return;
		}
		const m = await this.meta();
		try {
			if (m && this.token) {
				await this.checkpoint(this.token);
			}
		} catch (e) {
			console.error(`agent snapshot before the inactivity stop failed: ${(e as Error).message}`);
		}
		await this.removeContainer();
		if (m) {
			await this.index(m, "stopped");
		}
	}

	/** onStop records an agent whose container stopped (or died) as stopped. */
	override async onStop(): Promise<void> {
		const m = await this.meta();
		if (m) {
			await this.index(m, "stopped");
		}
	}

	/** onError keeps the runtime's container errors in the log. */
	override onError(e: unknown): unknown {
		console.error(`agent container error: ${e instanceof Error ? e.message : String(e)}`);
		return undefined;
	}

	// ---- metadata ----

	private meta(): Promise<Meta | undefined> {
		return this.ctx.storage.get<Meta>("meta");
	}

	/** own returns the agent's metadata when it is provider's. */
	private async own(provider: string): Promise<Meta> {
		const m = await this.meta();
		if (!m) {
			throw new HTTPError(404, "not_found", "no such agent");
		}
		if (m.provider !== provider) {
			throw new HTTPError(409, "other_provider", "the agent belongs to another provider");
		}
		return m;
	}

	/** record is the agent as the API reports it. */
	private record(m: Meta, state?: AgentRecord["state"]): AgentRecord {
		return {
			id: m.id,
			provider: m.provider,
			session_id: m.session_id,
			owner: m.owner,
			conversation: m.conversation,
			config_id: m.config_id,
			pool: m.pool,
			created_at: m.created_at,
			state: state ?? (this.box.running ? "running" : "stopped"),
			snapshot: m.snapshot,
			object_id: this.ctx.id.toString(),
		};
	}

	/** index records the agent in its provider's list. */
	private async index(m: Meta, state: AgentRecord["state"]): Promise<void> {
		await indexOf(this.env, m.provider).put(this.record(m, state));
	}
}

/** checkCreate refuses a create request the agent could not run with. */
function checkCreate(body: CreateRequest): void {
	if (!body.provider) {
		throw new BadRequest("provider is required");
	}
	if (!body.token) {
		throw new BadRequest("token is required");
	}
	if (body.config) {
		try {
			JSON.parse(body.config);
		} catch {
			throw new BadRequest("config must be JSON");
		}
	}
	for (const name of Object.keys(body.env ?? {})) {
		if (FORBIDDEN_ENV.includes(name.toUpperCase()) || name === "" || name.includes("=")) {
			throw new BadRequest(`env ${name}: refused (no API key in an agent's environment, no variable the Worker sets)`);
		}
	}
}

/** rebinds reports whether binding differs from the agent's. */
function rebinds(m: Meta, b: NonNullable<SleepRequest["binding"]>): boolean {
	return m.session_id !== b.session_id || m.owner !== b.owner || m.conversation !== b.conversation;
}

/** changesDisk reports whether an agent request changes its disk. */
function changesDisk(method: string, path: string): boolean {
	const p = `${method} ${path.split("?")[0]}`;
	return CHANGES_DISK.some((re) => re.test(p));
}
