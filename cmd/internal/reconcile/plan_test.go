package reconcile

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"

	"github.com/onionpod/onionpod/cmd/internal/store"
)

var update = flag.Bool("update", false, "rewrite the plan sections of the golden files")

// TestPlanGolden runs MakePlan on each testdata/plans/*.txtar (sections desired.json,
// observed.json, and optionally held.json and retry.json: the Desired's Held and Retry) and
// compares the result with its "plan" section.
func TestPlanGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/plans/*.txtar")
	if len(files) < 10 {
		t.Fatalf("only %d plan cases", len(files))
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var desired Desired
			var obs Observed
			var want string
			planIndex := -1
			for i, f := range ar.Files {
				switch f.Name {
				case "desired.json":
					if err := json.Unmarshal(f.Data, &desired.Apps); err != nil {
						t.Fatalf("desired.json: %v", err)
					}
				case "held.json":
					if err := json.Unmarshal(f.Data, &desired.Held); err != nil {
						t.Fatalf("held.json: %v", err)
					}
				case "retry.json":
					if err := json.Unmarshal(f.Data, &desired.Retry); err != nil {
						t.Fatalf("retry.json: %v", err)
					}
				case "observed.json":
					if err := json.Unmarshal(f.Data, &obs); err != nil {
						t.Fatalf("observed.json: %v", err)
					}
				case "plan":
					want, planIndex = string(f.Data), i
				}
			}
			for _, app := range desired.Apps {
				if err := app.Validate(); err != nil {
					t.Fatalf("test case has an invalid app: %v", err)
				}
			}
			got := MakePlan(desired, obs).String()
			if *update {
				if planIndex < 0 {
					ar.Files = append(ar.Files, txtar.File{Name: "plan"})
					planIndex = len(ar.Files) - 1
				}
				ar.Files[planIndex].Data = []byte(got)
				os.WriteFile(file, txtar.Format(ar), 0o644)
				return
			}
			if got != want {
				t.Errorf("plan differs\n--- got\n%s--- want\n%s", got, want)
			}
		})
	}
}

// A plan made from what it would produce is empty: applying a plan converges.
func TestPlanConverges(t *testing.T) {
	apps := []store.App{
		{Name: "blog", Containers: []store.Container{{Name: "blog", Image: "r.example/blog:1"}}, Ports: []store.Port{{Public: 80, Target: 80}}, Onion: true},
		{Name: "hidden", Containers: []store.Container{{Name: "hidden", Image: "r.example/h:1"}}, Ports: []store.Port{{Public: 80, Target: 80}}, OnionOnly: true},
		{Name: "lan", Containers: []store.Container{{Name: "lan", Static: "/srv/lan"}}},
		{Name: "off", Containers: []store.Container{{Name: "off", Static: "/srv/off"}}, Stopped: true},
		{Name: "notes", Containers: []store.Container{{Name: "db", Image: "r.example/pg:15"}, {Name: "web", Image: "r.example/notes:1", After: []string{"db"}}},
			Ports: []store.Port{{Public: 80, Target: 8080, Container: "web"}}, Onion: true},
	}
	obs := Observed{Keys: map[string]bool{}, Images: map[string]bool{}, Networks: map[string]bool{},
		Units: map[string]UnitState{}, NetUnits: map[string]bool{}, Onions: map[string]bool{}, DNS: map[string]bool{}}
	obs.Networks["gone"] = true
	obs.NetUnits["gone"] = true
	obs.NetUnits["cut-short"] = true // a removal cut short after its container units went: only the network unit is left
	obs.Units["gone"] = UnitState{Present: true, Current: true, Active: true}
	obs.Units["notes/old"] = UnitState{Present: true, Current: true, Active: true} // a container taken out
	obs.DNS["gone"] = true
	for pass := 0; pass < 3; pass++ {
		plan := MakePlan(Desired{Apps: apps}, obs)
		if plan.Empty() {
			if pass == 0 {
				t.Fatal("first plan is empty")
			}
			return
		}
		simulate(plan, apps, &obs)
	}
	t.Fatalf("still not converged:\n%s", MakePlan(Desired{Apps: apps}, obs))
}

// simulate applies a plan to observed state as perfect adapters would: a unit step acts on
// every container of its app (as Units.ApplyApp and Stop do).
func simulate(p Plan, desired []store.App, obs *Observed) {
	apps := map[string]store.App{}
	for _, a := range desired {
		apps[a.Name] = a
	}
	units := func(app string, f func(u *UnitState)) {
		for key, u := range obs.Units {
			if a, _ := appOfKey(key); a == app {
				f(&u)
				obs.Units[key] = u
			}
		}
	}
	for _, a := range p.Apps {
		for _, s := range a.Steps {
			switch s.Kind {
			case EnsureKey:
				obs.Keys[a.App] = true
			case EnsureImage:
				obs.Images[a.App] = true
			case AttachNetwork:
				obs.Networks[a.App] = true
				delete(obs.NetStale, a.App)
			case WriteUnit:
				for _, stray := range obs.unitsByApp().strays(apps[a.App]) {
					delete(obs.Units, UnitKey(a.App, stray))
				}
				for _, c := range apps[a.App].Containers {
					u := obs.Units[UnitKey(a.App, c.Name)]
					u.Present, u.Current = true, true
					obs.Units[UnitKey(a.App, c.Name)] = u
				}
			case StartUnit:
				units(a.App, func(u *UnitState) { u.Active = true })
			case AddOnion:
				obs.Onions[a.App] = true
			case PublishDNS:
				obs.DNS[a.App] = true
			case WithdrawDNS:
				delete(obs.DNS, a.App)
			case RemoveOnion:
				delete(obs.Onions, a.App)
			case StopUnit:
				units(a.App, func(u *UnitState) { u.Active = false })
			case RemoveUnit:
				for key := range obs.Units {
					if app, _ := appOfKey(key); app == a.App {
						delete(obs.Units, key)
					}
				}
				delete(obs.NetUnits, a.App)
			case DetachNetwork:
				delete(obs.Networks, a.App)
			}
		}
	}
}

// A removed app of which only the network unit file is left (a removal cut short between its
// container units and its network unit) is removed: the leftover is not invisible.
func TestPlanRemovesALoneNetworkUnit(t *testing.T) {
	obs := Observed{Keys: map[string]bool{}, Images: map[string]bool{}, Networks: map[string]bool{},
		Units: map[string]UnitState{}, NetUnits: map[string]bool{"gone": true}, Onions: map[string]bool{}, DNS: map[string]bool{}}
	plan := MakePlan(Desired{}, obs)
	if len(plan.Apps) != 1 || !plan.Apps[0].Removal || !planned(plan.Apps[0], RemoveUnit) {
		t.Fatalf("plan for a lone network unit of a removed app:\n%s", plan)
	}
	// The same file of a wanted app is its own: nothing to remove.
	app := store.App{Name: "gone", Containers: []store.Container{{Name: "gone", Static: "/srv/gone"}}, Stopped: true}
	if plan := MakePlan(Desired{Apps: []store.App{app}}, obs); !plan.Empty() {
		t.Fatalf("plan for a stopped app with its network unit:\n%s", plan)
	}
}
