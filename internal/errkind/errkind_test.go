package errkind

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
)

func TestKinds(t *testing.T) {
	err := BadInputf("port %q: expected a number", "x")
	if !IsBadInput(err) || IsNotFound(err) || errors.Is(err, Conflict) {
		t.Fatalf("BadInputf kinds wrong: %v", err)
	}
	if err.Error() != `port "x": expected a number` {
		t.Errorf("message = %q", err.Error())
	}
	wrapped := fmt.Errorf("pods: app blog: %w", err)
	if !IsBadInput(wrapped) {
		t.Error("a wrapped bad input is not bad input")
	}
	inner := NotFoundf("key file: %w", fs.ErrNotExist)
	if !IsNotFound(inner) || !errors.Is(inner, fs.ErrNotExist) || IsBadInput(inner) {
		t.Errorf("NotFoundf with %%w: %v", inner)
	}
	if !errors.Is(Conflictf("app changed"), Conflict) {
		t.Error("Conflictf")
	}
	if IsBadInput(errors.New("bad input")) {
		t.Error("a different error with the same text matched")
	}
}
