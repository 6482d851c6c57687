// The agcluster Worker: the gateway's provider (agcluster.providers.cloudflare)
// runs each conversation's agent in a Cloudflare container through it.
//
// API (JSON; every route requires the shared secret AGCLUSTER_WORKER_SECRET,
// compared in constant time, as "Authorization: Bearer <secret>", or on the
// relay routes, whose Authorization header is the agent's own, as
// "Agcluster-Worker-Authorization: Bearer <secret>"):
//
//	GET    /v1/ping                          the Worker answers (and the secret is right)
//	GET    /v1/agents?provider=<name>        the provider's agents
//	           [&session=<session id>]       only those serving that session (an
//	                                         agent made for a warm pool is named
//	                                         "pool_...", not by its session)
//	PUT    /v1/agents/{id}                   create and start an agent: CreateRequest
//	GET    /v1/agents/{id}?provider=<name>   one agent
//	POST   /v1/agents/{id}/sleep             save its disk, remove its container: SleepRequest
//	POST   /v1/agents/{id}/wake              start it again, disk restored: WakeRequest
//	DELETE /v1/agents/{id}?provider=<name>   destroy it: container, snapshot, metadata
//	*      /v1/agents/{id}/agent/<path>      relay to the agent's <path>, answer unchanged
//
// The Worker's own errors are {"error": {"code", "message"}} without the
// Agcluster-Agent header, which every answer of the agent carries: the
// gateway tells them apart. Nothing the Worker stores holds a token or a
// key: the gateway sends the agent's token with each start and request, and
// the user's API key travels inside the relayed queries only.

import { AgentContainer } from "./agent";
import { HTTPError, WORKER_AUTH_HEADER, answerError, bearer, error, json, sameSecret, validId } from "./http";
import { AgentIndex, indexOf } from "./registry";
import type { AgentRecord, Env } from "./types";

export { AgentContainer, AgentIndex };

export default {
	async fetch(req: Request, env: Env): Promise<Response> {
		try {
			const url = new URL(req.url);
			const parts = url.pathname.split("/"); // "", "v1", "agents", id, ...
			const relay = parts[1] === "v1" && parts[2] === "agents" && parts[4] === "agent";
			await authorize(req, env, relay);
			if (url.pathname === "/v1/ping" && req.method === "GET") {
				return json(200, { ok: true });
			}
			if (url.pathname === "/v1/agents" && req.method === "GET") {
				return json(200, { agents: await list(env, provider(url), url.searchParams.get("session")) });
			}
			if (parts[1] === "v1" && parts[2] === "agents" && parts.length >= 4) {
				const id = decodeURIComponent(parts[3]);
				if (!validId(id)) {
					return error(400, "bad_request", "invalid agent id");
				}
				return await env.AGENT.get(env.AGENT.idFromName(id)).fetch(req);
			}
			return error(404, "not_found", `no such route: ${req.method} ${url.pathname}`);
		} catch (e) {
			return answerError(e);
		}
	},
} satisfies ExportedHandler<Env>;

/** authorize refuses a request without the shared secret. */
async function authorize(req: Request, env: Env, relay: boolean): Promise<void> {
	if (!env.AGCLUSTER_WORKER_SECRET) {
		throw new HTTPError(500, "no_secret", "the Worker has no AGCLUSTER_WORKER_SECRET (wrangler secret put AGCLUSTER_WORKER_SECRET)");
	}
	const got = bearer(req.headers.get(relay ? WORKER_AUTH_HEADER : "Authorization"));
	if (got === null || !(await sameSecret(got, env.AGCLUSTER_WORKER_SECRET))) {
		const where = relay ? WORKER_AUTH_HEADER : "Authorization";
		throw new HTTPError(401, "unauthorized", `missing or wrong secret (${where}: Bearer <secret>)`);
	}
}

/** provider is the ?provider= of a request (required). */
function provider(url: URL): string {
	const p = url.searchParams.get("provider");
	if (!p) {
		throw new HTTPError(400, "bad_request", "?provider= is required");
	}
	return p;
}

/** list returns a provider's agents (those serving session, when it is
 * given); those its list says run are asked, so a container that died is
 * reported stopped. */
async function list(env: Env, provider: string, session: string | null): Promise<AgentRecord[]> {
	const records = (await indexOf(env, provider).list()).filter((r) => session === null || r.session_id === session);
	const checked = await Promise.all(
		records.map((r) => (r.state === "running" ? env.AGENT.get(env.AGENT.idFromName(r.id)).describe(provider) : r)),
	);
	return checked.filter((r): r is AgentRecord => r !== undefined);
}
