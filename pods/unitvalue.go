package pods

import (
	"fmt"
	"io"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/genvalue"
)

// valueKind says how a value is written into a unit file, and so what it may hold.
type valueKind int

const (
	// textValue is free text (Description=): no control character (genvalue.Check), no
	// backslash, no leading or trailing space (systemd would drop it); '%' is doubled so
	// systemd expands no specifier.
	textValue valueKind = iota
	// pathValue is an absolute path (genvalue.Path: no space, quote, backslash, ':', '%', '$').
	pathValue
	// bindValue is SOURCE:TARGET of BindPaths= and BindReadOnlyPaths=, both pathValues.
	bindValue
	// relPathValue is a path relative to a systemd directory (StateDirectory=): as pathValue,
	// without the leading '/'.
	relPathValue
	// commandValue is a command line (ExecStart=): every word passes genvalue.Check and is
	// double-quoted, with '"' and '\' escaped and '%' and '$' doubled, so systemd reads back
	// exactly these words and expands neither specifiers nor variables.
	commandValue
	// tokensValue is a list of fixed words (yes, exec, unit names, capabilities), joined by
	// spaces: each is letters, digits and "_.@+-" only. The list may be empty.
	tokensValue
	// readOnlyTmpfsValue is PATH of TemporaryFileSystem=, a pathValue written as PATH:ro.
	readOnlyTmpfsValue
	// ownTmpfsValue is PATH of TemporaryFileSystem=, a pathValue written as PATH:mode=0755
	// (writable).
	ownTmpfsValue
	// assignmentValue is KEY=VALUE for Environment=: KEY a variable name, VALUE passing
	// genvalue.Check; written double-quoted like a command word, '%' doubled ('$' is literal
	// in Environment=).
	assignmentValue
	// credentialValue is ID:PATH of LoadCredential=: ID a token, PATH a pathValue.
	credentialValue
	// absentPathValue is !PATH of ConditionPathExists= (the unit runs only where PATH does
	// not exist), PATH a pathValue.
	absentPathValue
	// limitValue is a resource limit (MemoryMax=, CPUQuota=...) that Limits.Check accepted:
	// letters, digits and '%' only, written as is (these settings expand no specifier).
	limitValue
)

// unitValue is the only way a value reaches a unit file. It checks values for their kind and
// renders them with the quoting systemd's parser needs to read back exactly these values: one
// line, one directive, no specifier or variable expanded. field names the value in errors
// (which match ErrBadInput and never repeat a value that could be a secret).
func unitValue(kind valueKind, field string, values ...string) (string, error) {
	switch kind {
	case textValue, pathValue, absentPathValue, bindValue, relPathValue, readOnlyTmpfsValue, ownTmpfsValue, assignmentValue, credentialValue:
		pair := kind == bindValue || kind == credentialValue
		if len(values) != 1 && !pair || pair && len(values) != 2 {
			return "", fmt.Errorf("pods: %s: %d values for one setting", field, len(values)) // a bug, not input
		}
	}
	switch kind {
	case textValue:
		v := values[0]
		if err := genvalue.Check(field, v); err != nil {
			return "", err
		}
		if strings.ContainsRune(v, '\\') || strings.TrimSpace(v) != v {
			return "", errkind.BadInputf("%s: no backslash, and no space at either end", field)
		}
		return strings.ReplaceAll(v, "%", "%%"), nil
	case pathValue:
		return values[0], genvalue.Path(field, values[0])
	case absentPathValue:
		return "!" + values[0], genvalue.Path(field, values[0])
	case readOnlyTmpfsValue:
		return values[0] + ":ro", genvalue.Path(field, values[0])
	case ownTmpfsValue:
		return values[0] + ":mode=0755", genvalue.Path(field, values[0])
	case bindValue:
		for _, p := range values {
			if err := genvalue.Path(field, p); err != nil {
				return "", err
			}
		}
		return values[0] + ":" + values[1], nil
	case credentialValue:
		if !isToken(values[0]) || strings.ContainsRune(values[0], '@') {
			return "", errkind.BadInputf("%s: credential name: only letters, digits and _.+-", field)
		}
		return values[0] + ":" + values[1], genvalue.Path(field, values[1])
	case relPathValue:
		v := values[0]
		if strings.HasPrefix(v, "/") || v == "" {
			return "", errkind.BadInputf("%s: %q is not a relative path", field, v)
		}
		return v, genvalue.Path(field, "/"+v)
	case commandValue:
		if len(values) == 0 {
			return "", errkind.BadInputf("%s: empty command", field)
		}
		words := make([]string, len(values))
		for i, w := range values {
			if err := genvalue.Check(fmt.Sprintf("%s argument %d", field, i), w); err != nil {
				return "", err
			}
			words[i] = quoteWord(w, true)
		}
		return strings.Join(words, " "), nil
	case tokensValue:
		for _, w := range values {
			if !isToken(w) {
				if err := genvalue.Check(field, w); err != nil {
					return "", err
				}
				return "", errkind.BadInputf("%s: %q: only letters, digits and _.@+- are allowed", field, w)
			}
		}
		return strings.Join(values, " "), nil
	case limitValue:
		if len(values) != 1 || values[0] == "" || strings.TrimLeft(values[0], "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ%") != "" {
			return "", errkind.BadInputf("%s: a number, a percentage or infinity", field)
		}
		return values[0], nil
	case assignmentValue:
		k, v, ok := strings.Cut(values[0], "=")
		if !ok || !envName.MatchString(k) {
			return "", errkind.BadInputf("%s: want KEY=VALUE with KEY letters, digits and '_'", field)
		}
		if err := genvalue.Check(field+" "+k, v); err != nil {
			return "", err
		}
		return quoteWord(values[0], false), nil
	}
	return "", fmt.Errorf("pods: %s: unknown value kind %d", field, kind)
}

func isToken(w string) bool {
	if w == "" || len(w) > 255 {
		return false
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.@+-", c) >= 0) {
			return false
		}
	}
	return true
}

// quoteWord double-quotes one checked word (no control characters) of a unit setting: '"' and
// '\' are escaped, '%' doubled, and '$' doubled too when dollar is set (ExecStart= expands it).
func quoteWord(s string, dollar bool) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '%':
			b.WriteString("%%")
		case r == '$' && dollar:
			b.WriteString("$$")
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// unitBuilder collects a unit's directives, every value through unitValue. The first bad value
// stops it: its error is returned by bytes.
type unitBuilder struct {
	opts []*unit.UnitOption
	err  error
}

// set adds the directive section.name with the values rendered as kind.
func (b *unitBuilder) set(section, name string, kind valueKind, field string, values ...string) {
	if b.err != nil {
		return
	}
	v, err := unitValue(kind, field, values...)
	if err != nil {
		b.err = err
		return
	}
	b.opts = append(b.opts, unit.NewUnitOption(section, name, v))
}

// fixed adds a directive whose value is onionpod's own word (yes, exec, a unit name...).
func (b *unitBuilder) fixed(section, name string, words ...string) {
	b.set(section, name, tokensValue, section+"."+name, words...)
}

// bytes serializes the unit, or returns the first error.
func (b *unitBuilder) bytes() ([]byte, error) {
	if b.err != nil {
		return nil, b.err
	}
	return serialize(b.opts), nil
}

func serialize(o []*unit.UnitOption) []byte {
	b, _ := io.ReadAll(unit.Serialize(o)) // reading a bytes.Buffer cannot fail
	return append([]byte(generatedHeader), b...)
}

const generatedHeader = "# Written by onionpod; changes are overwritten.\n"

// envFileContent renders KEY=VALUE pairs for systemd's EnvironmentFile= parser: one
// KEY="VALUE" line each, with '"', '\', '`' and '$' escaped by a backslash (the only escapes
// that parser reads inside double quotes); values pass genvalue.Check. No specifier or variable
// is expanded in an environment file.
func envFileContent(env []string) ([]byte, error) {
	var b strings.Builder
	b.WriteString(generatedHeader)
	for _, e := range env {
		k, v, ok := strings.Cut(e, "=")
		if !ok || !envName.MatchString(k) {
			return nil, errkind.BadInputf("environment: want KEY=VALUE with KEY letters, digits and '_'")
		}
		if err := genvalue.Check("environment "+k, v); err != nil {
			return nil, err
		}
		b.WriteString(k)
		b.WriteString(`="`)
		for _, r := range v {
			if strings.ContainsRune("\"\\`$", r) {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		b.WriteString("\"\n")
	}
	return []byte(b.String()), nil
}
