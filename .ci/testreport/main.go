// Command testreport reads `go test -json` on stdin and prints one line per test (PASS, FAIL,
// SKIP with its reason) and per package, then a summary. It exits 1 when a test failed, or when
// a test skipped for a reason other than the harness's own phase split ("runs inside ..." /
// "runs on the host"): in CI every real part is installed, so nothing else may skip.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

// structural skips are the two halves of a test that runs partly inside a booted box.
var structural = []string{"runs inside", "runs on the host", "inside a podstest box", "only inside"}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	output := map[string][]string{} // package/test -> its output lines
	var passed, failed, skipped int
	var badSkips, failures []string
	for in.Scan() {
		var e event
		if err := json.Unmarshal(in.Bytes(), &e); err != nil {
			fmt.Println(in.Text()) // build errors and the like
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			output[key] = append(output[key], e.Output)
		case "pass", "fail", "skip":
			if e.Test == "" {
				fmt.Printf("%-4s %s (%.1fs)\n", strings.ToUpper(e.Action), e.Package, e.Elapsed)
				if e.Action == "fail" {
					failures = append(failures, e.Package)
					fmt.Print(strings.Join(output[key], ""))
				}
				continue
			}
			pkg := e.Package[strings.LastIndex(e.Package, "/")+1:]
			switch e.Action {
			case "pass":
				passed++
				fmt.Printf("  ok   %s %s (%.2fs)\n", pkg, e.Test, e.Elapsed)
			case "fail":
				failed++
				failures = append(failures, key)
				fmt.Printf("  FAIL %s %s (%.2fs)\n%s", pkg, e.Test, e.Elapsed, strings.Join(output[key], ""))
			case "skip":
				skipped++
				reason := skipReason(output[key])
				fmt.Printf("  skip %s %s: %s\n", pkg, e.Test, reason)
				if !isStructural(reason) {
					badSkips = append(badSkips, key+": "+reason)
				}
			}
			delete(output, key)
		}
	}
	fmt.Printf("\n%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	sort.Strings(badSkips)
	for _, s := range badSkips {
		fmt.Println("unexpected skip:", s)
	}
	if len(failures) > 0 || len(badSkips) > 0 {
		os.Exit(1)
	}
}

func skipReason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "---") || strings.HasPrefix(l, "===") {
			continue
		}
		if _, after, ok := strings.Cut(l, ": "); ok && strings.Contains(l, ".go:") {
			return after
		}
		return l
	}
	return "(no reason given)"
}

func isStructural(reason string) bool {
	for _, s := range structural {
		if strings.Contains(reason, s) {
			return true
		}
	}
	return false
}
