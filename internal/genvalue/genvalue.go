// Package genvalue is the one check every value passes before it is written into a file onionpod
// generates (systemd unit files and environment files, the managed tor's torrc, DNS zone data,
// app files). A value that holds a control character could end a line for the file's parser and
// add a directive of its own (a carriage return in a WorkingDirectory= adds an ExecStartPre=+ that
// runs as root), so such values are refused, never escaped into the file.
//
// Errors match errkind.BadInput, name the field, and never repeat the value itself (it may be a
// secret, such as an environment variable's value).
package genvalue

import (
	"path"
	"strings"
	"unicode/utf8"

	"github.com/onionpod/onionpod/internal/errkind"
)

// Check accepts a value that is valid UTF-8 and holds no control character: none of C0 (U+0000 to
// U+001F, which includes tab, line feed and carriage return), DEL, C1 (U+0080 to U+009F), nor the
// Unicode line and paragraph separators. field names the value in the error ("image config
// WorkingDir", "--volume").
func Check(field, value string) error {
	if !utf8.ValidString(value) {
		return errkind.BadInputf("%s: not valid UTF-8", field)
	}
	for i, r := range value {
		if IsControl(r) {
			return errkind.BadInputf("%s: control character U+%04X at byte %d is not allowed", field, r, i)
		}
	}
	return nil
}

// IsControl reports whether r is a character Check refuses.
func IsControl(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == '\u2028' || r == '\u2029'
}

// pathSpecial are the characters a path may not hold beyond Check's: those systemd reads as
// separators, quotes, escapes or specifiers in path settings and path lists (BindPaths=a:b,
// StateDirectory=, WorkingDirectory=), and shell-like expansion ('$').
const pathSpecial = " \"'\\:%$;*?[]{}"

// Path accepts a clean absolute path (no "..", no "//", no trailing '/') that passes Check and
// holds none of the characters systemd would read as anything but the path: whitespace, quotes,
// backslash, ':', '%', '$', ';' and glob characters.
func Path(field, p string) error {
	if err := Check(field, p); err != nil {
		return err
	}
	if !path.IsAbs(p) || path.Clean(p) != p {
		return errkind.BadInputf("%s: %q is not a clean absolute path", field, p)
	}
	if i := strings.IndexAny(p, pathSpecial); i >= 0 {
		r, _ := utf8.DecodeRuneInString(p[i:])
		return errkind.BadInputf("%s: %q holds %q, which generated files cannot take in a path", field, p, r)
	}
	return nil
}
