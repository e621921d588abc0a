// kstatus-check: reads a JSON array of Kubernetes objects on stdin and prints, for each, what
// sigs.k8s.io/cli-utils kstatus (status.Compute) reads: a JSON array of {"status", "message"}.
// Built by tests/kstatus.py into a cache directory outside the repository.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

func main() {
	var objects []json.RawMessage
	if err := json.NewDecoder(os.Stdin).Decode(&objects); err != nil {
		fmt.Fprintf(os.Stderr, "stdin: %v; accepted: a JSON array of Kubernetes objects\n", err)
		os.Exit(2)
	}
	out := make([]result, 0, len(objects))
	for _, raw := range objects {
		// Unstructured's own decoder keeps integers int64, as the API machinery hands them to kstatus.
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(raw); err != nil {
			out = append(out, result{Status: "Error", Error: err.Error()})
			continue
		}
		res, err := status.Compute(obj)
		if err != nil {
			out = append(out, result{Status: "Error", Error: err.Error()})
			continue
		}
		out = append(out, result{Status: res.Status.String(), Message: res.Message})
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "stdout: %v\n", err)
		os.Exit(1)
	}
}
