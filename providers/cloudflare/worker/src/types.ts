// Types shared by the Worker's parts.

import type { AgentContainer } from "./agent";
import type { AgentIndex } from "./registry";

/** The Worker's bindings (wrangler.jsonc) and its secret. */
export interface Env {
	/** One Durable Object, with its container, per agent. */
	AGENT: DurableObjectNamespace<AgentContainer>;
	/** The list of agents, one object per provider name. */
	INDEX: DurableObjectNamespace<AgentIndex>;
	/** Snapshots of the agents' disks (workspace and CLI state). */
	SNAPSHOTS: R2Bucket;
	/** The shared secret every request must carry (wrangler secret put). */
	AGCLUSTER_WORKER_SECRET: string;
}

/** Who an agent serves: the gateway's identity of it. No token, no key. */
export interface Identity {
	/** The configured name of the gateway provider that made the agent. */
	provider: string;
	/** The session the agent serves (empty for a warm-pool agent). */
	session_id: string;
	/** The owner's opaque id (a hash). */
	owner: string;
	/** The client's conversation id. */
	conversation: string;
	/** The agent configuration's id. */
	config_id: string;
	/** The warm-pool entry the agent was made for. */
	pool: string;
}

/** What the Durable Object keeps about its agent. */
export interface Meta extends Identity {
	/** The agent's id: the Durable Object's name. */
	id: string;
	/** When the agent was created (RFC 3339). */
	created_at: string;
	/** The agent configuration, as JSON (AGENT_CONFIG). */
	config: string;
	/** Extra environment of the agent (never an API key). */
	env: Record<string, string>;
	/** The last snapshot of its disk, if any. */
	snapshot?: SnapshotInfo;
}

/** A stored snapshot. */
export interface SnapshotInfo {
	/** When it was taken (RFC 3339). */
	at: string;
	/** Its size in bytes (gzip-compressed tar). */
	bytes: number;
}

/** An agent as the API reports it. */
export interface AgentRecord extends Identity {
	/** The agent's id. */
	id: string;
	/** When it was created (RFC 3339). */
	created_at: string;
	/** "running" (its container runs) or "stopped" (asleep, or dead). */
	state: "running" | "stopped";
	/** The last snapshot of its disk, if any. */
	snapshot?: SnapshotInfo;
	/** The Durable Object's id (the local runtime names its container after it). */
	object_id: string;
}

/** Body of PUT /v1/agents/{id}. */
export interface CreateRequest extends Identity {
	/** The agent's bearer token (passed to the container, never stored). */
	token: string;
	/** The agent configuration as JSON. */
	config?: string;
	/** Extra environment (never an API key). */
	env?: Record<string, string>;
}

/** Body of POST /v1/agents/{id}/sleep. */
export interface SleepRequest {
	/** The provider asking (it must be the agent's). */
	provider: string;
	/** The agent's token, for the snapshot (never stored). */
	token?: string;
	/** The session the agent serves now (a warm-pool agent handed out). */
	binding?: { session_id: string; owner: string; conversation: string };
}

/** Body of POST /v1/agents/{id}/wake. */
export interface WakeRequest {
	/** The provider asking (it must be the agent's). */
	provider: string;
	/** The agent's token for the new container (never stored). */
	token: string;
}
