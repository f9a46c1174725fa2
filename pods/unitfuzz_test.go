package pods

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/onionpod/onionpod/internal/genvalue"
)

// FuzzRenderUnits renders units from random specs and host services. A spec is either refused as
// bad input, or its units parse back (go-systemd's deserializer, on text that holds no line break
// but '\n') to exactly the directives onionpod meant, and each value reads back, by systemd's
// rules, as exactly the spec's value.
func FuzzRenderUnits(f *testing.F) {
	f.Add("/www", "/data", "/srv/site", "GREETING", `hello "world" 100% $HOME`, "httpd", "-h", "onionpod tor")
	f.Add("/"+injection, "/d"+injection, "/s"+injection, "A", "b"+injection, "x"+injection, ";", "t"+injection)
	f.Add("/ü/ñ", "/data", "/srv", "A_1", `\'"$$%%;#`+"`", `%n`, `$HOME`, "100% \\")
	f.Add("/a b", "/a:b", "/a%h", "1A", "x\u2028y", "\x00", "\\", " lead")
	f.Fuzz(func(t *testing.T, wd, vol, bind, key, val, arg1, arg2, desc string) {
		s := Spec{
			App: "blog", Root: "/var/lib/onionpod/images/roots/0123", Netns: "/run/netns/onionpod-blog",
			Command: []string{"/bin/busybox", arg1, arg2}, Env: []string{key + "=" + val}, WorkingDir: wd,
			Volumes:      []Volume{{Name: "data", Path: vol}},
			BindReadOnly: []Bind{{Source: bind, Target: "/site"}},
			NetUp:        []string{"/usr/bin/onionpod", "internal", "net-up", arg1},
		}
		units, err := PodUnits(s)
		if err != nil {
			if !errors.Is(err, ErrBadInput) {
				t.Fatalf("PodUnits: %v, not bad input", err)
			}
		} else {
			net, pod := units[0], units[1]
			checkUnitText(t, net.Content)
			checkUnitText(t, pod.Content)
			want := []string{"Unit.Description", "Unit.Requires", "Unit.After", "Service.Type", "Service.ExecStart",
				"Service.RootDirectory", "Service.MountAPIVFS", "Service.NetworkNamespacePath", "Service.DynamicUser",
				"Service.User", "Service.NoNewPrivileges", "Service.CapabilityBoundingSet", "Service.ProtectSystem",
				"Service.PrivateDevices", "Service.PrivateTmp", "Service.RestrictSUIDSGID", "Service.LockPersonality",
				"Service.EnvironmentFile"}
			if wd != "" {
				want = append(want, "Service.WorkingDirectory")
			}
			want = append(want, "Service.StateDirectory", "Service.BindPaths", "Service.BindReadOnlyPaths",
				"Service.MemoryMax", "Service.CPUWeight", "Service.TasksMax", "Service.SyslogIdentifier", "Service.Restart", "Service.TimeoutStopSec", "Install.WantedBy")
			got := parseUnit(t, pod.Content)
			if names := optionNames(got); !slices.Equal(names, want) {
				t.Fatalf("pod unit directives %q\nwant %q\n%s", names, want, pod.Content)
			}
			values := optionValues(got)
			if argv := decodeCommand(t, values["Service.ExecStart"]); !slices.Equal(argv, s.Command) {
				t.Fatalf("ExecStart reads back as %q, want %q", argv, s.Command)
			}
			expect := map[string]string{
				"Service.WorkingDirectory":  wd,
				"Service.BindPaths":         VolumeHostDir("blog", "data") + ":" + vol,
				"Service.BindReadOnlyPaths": bind + ":/site",
				"Service.EnvironmentFile":   EnvFile(pod.Name),
			}
			for k, v := range expect {
				if k == "Service.WorkingDirectory" && wd == "" {
					continue
				}
				if values[k] != v || strings.ContainsAny(v, "%$\\\"' ") {
					t.Fatalf("%s = %q, want %q (with nothing systemd would read as more)", k, values[k], v)
				}
			}
			if env := parseEnvFile(t, pod.Env); !slices.Equal(env, s.Env) {
				t.Fatalf("environment file reads back as %q, want %q\n%s", env, s.Env, pod.Env)
			}
			netOpts := parseUnit(t, net.Content)
			if names := optionNames(netOpts); !slices.Equal(names, []string{"Unit.Description", "Unit.ConditionPathExists", "Unit.After", "Unit.Before",
				"Service.Type", "Service.RemainAfterExit", "Service.ExecStart", "Service.SyslogIdentifier"}) {
				t.Fatalf("network unit directives %q", names)
			}
			if c := optionValues(netOpts)["Unit.ConditionPathExists"]; c != "!"+s.Netns {
				t.Fatalf("network unit condition %q, want !%s", c, s.Netns)
			}
			if argv := decodeCommand(t, optionValues(netOpts)["Service.ExecStart"]); !slices.Equal(argv, s.NetUp) {
				t.Fatalf("network ExecStart reads back as %q, want %q", argv, s.NetUp)
			}
		}

		h := HostService{Name: "tor", Description: desc, ExecStart: []string{"/usr/bin/tor", arg1, arg2},
			Environment: []string{key + "=" + val}, After: []string{arg2}}
		u, err := h.Unit()
		if err != nil {
			if !errors.Is(err, ErrBadInput) {
				t.Fatalf("HostService.Unit: %v, not bad input", err)
			}
			return
		}
		checkUnitText(t, u.Content)
		got := parseUnit(t, u.Content)
		want := []string{"Unit.Description", "Unit.After", "Service.Type", "Service.ExecStart", "Service.Environment",
			"Service.Restart", "Install.WantedBy"}
		if names := optionNames(got); !slices.Equal(names, want) {
			t.Fatalf("host service directives %q\nwant %q\n%s", names, want, u.Content)
		}
		values := optionValues(got)
		wantDesc := desc
		if wantDesc == "" {
			wantDesc = "onionpod tor"
		}
		if d := strings.ReplaceAll(values["Unit.Description"], "%%", "%"); d != wantDesc || strings.Count(values["Unit.Description"], "%")%2 != 0 {
			t.Fatalf("Description reads back as %q, want %q", d, wantDesc)
		}
		if v := decodeWord(t, values["Service.Environment"], false); v != key+"="+val {
			t.Fatalf("Environment reads back as %q, want %q", v, key+"="+val)
		}
		if argv := decodeCommand(t, values["Service.ExecStart"]); !slices.Equal(argv, h.ExecStart) {
			t.Fatalf("host ExecStart reads back as %q, want %q", argv, h.ExecStart)
		}
	})
}

// checkUnitText checks what go-systemd's parser does not: systemd's own parser also ends a line
// at '\r' and NUL, and continues one ending in '\'. Rendered units hold neither, and no control
// character at all but '\n'.
func checkUnitText(t *testing.T, content []byte) {
	t.Helper()
	if !utf8.Valid(content) {
		t.Fatalf("unit is not UTF-8:\n%q", content)
	}
	for _, line := range strings.Split(string(content), "\n") {
		if err := genvalue.Check("line", line); err != nil {
			t.Fatalf("unit line %q: %v", line, err)
		}
		if strings.HasSuffix(line, `\`) {
			t.Fatalf("unit line %q continues on the next", line)
		}
	}
}

func parseUnit(t *testing.T, content []byte) []*unit.UnitOption {
	t.Helper()
	opts, err := unit.DeserializeOptions(bytes.NewReader(content))
	if err != nil {
		t.Fatalf("unit does not parse: %v\n%s", err, content)
	}
	return opts
}

func optionNames(opts []*unit.UnitOption) []string {
	var out []string
	for _, o := range opts {
		out = append(out, o.Section+"."+o.Name)
	}
	return out
}

func optionValues(opts []*unit.UnitOption) map[string]string {
	out := map[string]string{}
	for _, o := range opts {
		out[o.Section+"."+o.Name] = o.Value
	}
	return out
}

// decodeCommand reads an ExecStart= value the way systemd does, for the subset onionpod writes:
// words in double quotes, '\' escaping '"' and '\', "%%" for '%' and "$$" for '$'. Anything else
// (an unquoted word, another escape, a lone '%' or '$') fails: systemd would read more into it.
func decodeCommand(t *testing.T, v string) []string {
	t.Helper()
	var argv []string
	for v != "" {
		if v[0] != '"' {
			t.Fatalf("command %q: a word is not quoted", v)
		}
		end := 1
		for end < len(v) && v[end] != '"' {
			if v[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(v) {
			t.Fatalf("command %q: unterminated quote", v)
		}
		argv = append(argv, decodeWord(t, v[:end+1], true))
		v = v[end+1:]
		if v != "" {
			if v[0] != ' ' {
				t.Fatalf("command %q: words not separated by a space", v)
			}
			v = v[1:]
		}
	}
	return argv
}

func decodeWord(t *testing.T, w string, dollar bool) string {
	t.Helper()
	if len(w) < 2 || w[0] != '"' || w[len(w)-1] != '"' {
		t.Fatalf("word %q is not quoted", w)
	}
	var b strings.Builder
	in := w[1 : len(w)-1]
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch {
		case c == '\\':
			if i+1 >= len(in) || in[i+1] != '\\' && in[i+1] != '"' {
				t.Fatalf("word %q: escape systemd would read otherwise", w)
			}
			i++
			b.WriteByte(in[i])
		case c == '%' || c == '$' && dollar:
			if i+1 >= len(in) || in[i+1] != c {
				t.Fatalf("word %q: lone %c (a specifier or variable)", w, c)
			}
			i++
			b.WriteByte(c)
		case c == '"':
			t.Fatalf("word %q: unescaped quote", w)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// parseEnvFile reads an environment file the way systemd's EnvironmentFile= parser does, for
// what onionpod writes: comment lines, and KEY="VALUE" lines where '\' escapes '"', '\', '`'
// and '$'.
func parseEnvFile(t *testing.T, content []byte) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSuffix(string(content), "\n"), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, `="`)
		if !ok || !strings.HasSuffix(v, `"`) || !envName.MatchString(k) {
			t.Fatalf("environment line %q", line)
		}
		v = v[:len(v)-1]
		var b strings.Builder
		for i := 0; i < len(v); i++ {
			switch {
			case v[i] == '\\' && i+1 < len(v) && strings.IndexByte("\"\\`$", v[i+1]) >= 0:
				i++
				b.WriteByte(v[i])
			case v[i] == '\\' || v[i] == '"':
				t.Fatalf("environment line %q: a lone %c", line, v[i])
			default:
				b.WriteByte(v[i])
			}
		}
		out = append(out, k+"="+b.String())
	}
	return out
}
