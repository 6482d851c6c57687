package clienttools

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/agcluster/caddy-agcluster/agent"
)

// namePattern is what a client function's name may be (OpenAI's rule).
var namePattern = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// Tool choices other than a function's name.
const (
	// ChoiceAuto lets the model decide (also the empty string).
	ChoiceAuto = "auto"
	// ChoiceRequired makes the model call one of the functions.
	ChoiceRequired = "required"
)

// Validate checks the tools and tool choice of a query: unique names of
// [a-zA-Z0-9_-]{1,64}, parameters that are a JSON Schema object (type
// "object" or no type), and a choice that is empty, "auto", "required" or
// one of the names.
func Validate(tools []agent.ClientTool, choice string) error {
	var errs []error
	seen := make(map[string]bool, len(tools))
	for i, t := range tools {
		if !namePattern.MatchString(t.Name) {
			errs = append(errs, fmt.Errorf("tools[%d].name %q must be 1-64 letters, digits, '_' or '-'", i, t.Name))
		}
		if seen[t.Name] {
			errs = append(errs, fmt.Errorf("tools[%d].name %q is used twice", i, t.Name))
		}
		seen[t.Name] = true
		if _, err := inputSchema(t.Parameters); err != nil {
			errs = append(errs, fmt.Errorf("tools[%d].parameters: %w", i, err))
		}
	}
	switch {
	case choice == "" || choice == ChoiceAuto:
	case choice == ChoiceRequired:
		if len(tools) == 0 {
			errs = append(errs, errors.New(`tool_choice "required" needs tools`))
		}
	case !seen[choice]:
		errs = append(errs, fmt.Errorf("tool_choice %q is not auto, required or the name of one of the tools", choice))
	}
	return errors.Join(errs...)
}

// inputSchema is the MCP inputSchema for a function's parameters: the
// schema itself, with "type":"object" added when it has no type (the API
// requires it), or an empty object schema when there are no parameters.
func inputSchema(params json.RawMessage) (json.RawMessage, error) {
	params = bytes.TrimSpace(params)
	if len(params) == 0 || bytes.Equal(params, []byte("null")) {
		return json.RawMessage(`{"type":"object","properties":{}}`), nil
	}
	var schema map[string]json.RawMessage
	if err := json.Unmarshal(params, &schema); err != nil || schema == nil {
		return nil, errors.New("must be a JSON Schema object")
	}
	typ, ok := schema["type"]
	if !ok {
		schema["type"] = json.RawMessage(`"object"`)
		b, err := json.Marshal(schema)
		if err != nil {
			return nil, fmt.Errorf("encode schema: %w", err)
		}
		return b, nil
	}
	var s string
	if err := json.Unmarshal(typ, &s); err != nil || s != "object" {
		return nil, fmt.Errorf(`type must be "object", got %s`, typ)
	}
	return params, nil
}
