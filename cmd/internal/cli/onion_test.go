package cli

import (
	"os"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestOnionScripts runs the onion key commands end to end (testdata/onion/*.txtar), with no
// daemon: import, export, ls, backup, restore, client auth, and their refusals.
func TestOnionScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/onion",
		Setup: func(e *testscript.Env) error {
			cfg := e.WorkDir + "/onionpod.toml"
			if err := os.WriteFile(cfg, []byte("state_dir = \""+e.WorkDir+"/state\"\n"), 0o644); err != nil {
				return err
			}
			e.Setenv("ONIONPOD_CONFIG", cfg)
			return nil
		},
		RequireExplicitExec: true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// flipbyte IN OFFSET OUT: copy IN to OUT with one bit flipped at OFFSET.
			"flipbyte": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 3 {
					ts.Fatalf("usage: flipbyte IN OFFSET OUT")
				}
				b, err := os.ReadFile(ts.MkAbs(args[0]))
				ts.Check(err)
				off, err := strconv.Atoi(args[1])
				ts.Check(err)
				if off < 0 {
					off += len(b)
				}
				b[off] ^= 0x01
				ts.Check(os.WriteFile(ts.MkAbs(args[2]), b, 0o600))
			},
		},
	})
}
