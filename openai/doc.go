// Package openai speaks the OpenAI Chat Completions wire format for the
// gateway: it decodes and validates client requests ([ParseRequest]):
// text, images and files ([ChatCompletionRequest.Attachments]), the
// client's function tools ([ChatCompletionRequest.ApplyTools]) and their
// results ([ChatCompletionRequest.ToolResults]); it translates the agent's
// event stream (package agent) into chat.completion.chunk Server-Sent
// Events ([StreamWriter]) or a single chat.completion object
// ([Collector]), ending an answer that calls the client's functions with
// tool_calls; it fingerprints conversations ([Fingerprint],
// [PrefixFingerprints]); and it writes OpenAI-shaped errors ([Error]).
//
// The output is shaped for the clients the gateway serves (LibreChat, Open
// WebUI, openai-go and other OpenAI SDKs):
//
//   - no chunk ever carries a top-level "error" key, not even null, because
//     openai-go aborts the stream on it; errors after the stream began are
//     reported as a content note and a normal end of stream;
//   - every chunk of a response carries the same id;
//   - finish_reason is null on every chunk but the final one;
//   - the usage chunk (stream_options.include_usage) has "choices": [];
//   - the stream ends with "data: [DONE]";
//   - error responses send "x-should-retry: false" where a client retry
//     would run the agent turn a second time.
package openai
