// The list of agents: Durable Objects cannot be enumerated, so one
// AgentIndex object per provider name (named "index:<provider>") records
// its agents for GET /v1/agents, which a restarted gateway lists.

import { DurableObject } from "cloudflare:workers";

import type { AgentRecord, Env } from "./types";

/** AgentIndex records a provider's agents, kept current by their Durable
 * Objects (created, slept, woken, stopped, destroyed). */
export class AgentIndex extends DurableObject<Env> {
	constructor(ctx: DurableObjectState, env: Env) {
		super(ctx, env);
		ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS agents (id TEXT PRIMARY KEY, record TEXT NOT NULL)");
	}

	/** put records (or replaces) an agent. */
	async put(record: AgentRecord): Promise<void> {
		this.ctx.storage.sql.exec(
			"INSERT INTO agents (id, record) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET record = excluded.record",
			record.id,
			JSON.stringify(record),
		);
	}

	/** remove forgets an agent. */
	async remove(id: string): Promise<void> {
		this.ctx.storage.sql.exec("DELETE FROM agents WHERE id = ?", id);
	}

	/** list returns every recorded agent, by id. */
	async list(): Promise<AgentRecord[]> {
		const rows = this.ctx.storage.sql.exec<{ record: string }>("SELECT record FROM agents ORDER BY id").toArray();
		return rows.map((r) => JSON.parse(r.record) as AgentRecord);
	}
}

/** indexOf is the index object of a provider's agents. */
export function indexOf(env: Env, provider: string): DurableObjectStub<AgentIndex> {
	return env.INDEX.get(env.INDEX.idFromName("index:" + provider));
}
