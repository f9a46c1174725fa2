package network

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"sync"

	"golang.org/x/sys/unix"
)

// Several processes work on one state dir at once: the daemon's long-lived Manager, and the
// short-lived ones of `onionpod internal net-up/net-down` that systemd runs at boot and when an app
// is removed. They take turns through open-file-description locks (fcntl F_OFD_SETLKW) on one file,
// StateDir/lock, one byte per lock:
//
//   - byte 0 is the state lock, held briefly: to allocate a lease (read every lease, check the MAC,
//     pick a free ULA, store the lease) and to create or remove the shim (whose fate depends on the
//     LAN leases on disk);
//   - every app has a byte of its own (1 + a hash of its name), held for the whole Attach, Detach
//     or Check of the app, so that CNI never runs twice at once for one pod (the spec forbids it)
//     and each step starts from the lease as the last process left it.
//
// The order is app lock, then state lock; the state lock is never held while waiting for anything
// slow (CNI, DHCP, the background teardown after Detach, an app lock). Each acquisition opens the
// file anew: OFD locks conflict between open file descriptions, so goroutines of one process
// exclude each other just as processes do, and the kernel drops the locks of a process that dies.

// stateLockOffset is the byte of the state lock in the lock file.
const stateLockOffset = 0

// appLockOffset is app's byte in the lock file. Two apps whose names hash alike share a byte: they
// then take turns, which is slower but never wrong (no operation holds two app locks).
func appLockOffset(app string) int64 {
	h := fnv.New64a()
	h.Write([]byte(app))
	return 1 + int64(h.Sum64()>>2)
}

// lockFile is the state dir's lock file.
type lockFile struct{ path string }

// lock takes the write lock on byte offset, waiting until it is free or ctx ends. unlock releases it.
func (f lockFile) lock(ctx context.Context, offset int64) (unlock func(), err error) {
	fd, err := unix.Open(f.path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", f.path, err)
	}
	release := sync.OnceFunc(func() { unix.Close(fd) }) // closing the description drops its locks
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: offset, Len: 1}
	err = unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
	if err == nil {
		return release, nil
	}
	if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
		release()
		return nil, fmt.Errorf("lock %s: %w", f.path, err)
	}
	// Taken: wait in the kernel on a goroutine of its own, so that ctx can end the wait.
	got := make(chan error, 1)
	go func() {
		for {
			lk := lk
			err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLKW, &lk)
			if !errors.Is(err, unix.EINTR) {
				got <- err
				return
			}
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			release()
			return nil, fmt.Errorf("lock %s: %w", f.path, err)
		}
		return release, nil
	case <-ctx.Done():
		go func() { <-got; release() }() // gives the lock back as soon as it comes
		return nil, ctx.Err()
	}
}

// lockState takes the state lock for a short critical section. The channel keeps this process's
// goroutines queued in Go rather than each in a blocked fcntl.
func (m *Manager) lockState(ctx context.Context) (unlock func(), err error) {
	select {
	case m.stateTurn <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	unlockFile, err := m.lockFile.lock(ctx, stateLockOffset)
	if err != nil {
		<-m.stateTurn
		return nil, fmt.Errorf("state lock: %w", err)
	}
	return sync.OnceFunc(func() {
		unlockFile()
		<-m.stateTurn
	}), nil
}
