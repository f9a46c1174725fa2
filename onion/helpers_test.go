package onion

import (
	"encoding/json"
	"os/exec"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func runCmd(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
