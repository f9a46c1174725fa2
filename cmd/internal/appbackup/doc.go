// Package appbackup backs whole apps up and restores them: one age-encrypted, authenticated,
// streamed archive holding, for each app, its record (the app file), its onion key and client
// list, and the data of its volumes; restored on another box, the app comes back with the same
// .onion and its data, all or nothing.
//
// The plaintext is a tar stream (PAX), so `age -d FILE | tar -t` lists it:
//
//	backup.json                     the header: format, version, apps, their volumes (first)
//	apps/APP/record                 the app's record, opaque here (Source and Target read it)
//	apps/APP/onion                  its key and clients (Keys; absent for an app without a key)
//	apps/APP/images/HEX/000000...   an image it runs that no registry serves (sent to its box as
//	                                an archive): the archive Source.WriteImage writes, in 4 MiB
//	                                chunks; restored into the image store of a box that lacks it
//	apps/APP/volumes/VOL/...        the files of a volume copied as files: modes, numeric owners,
//	                                modification times, symlinks (never followed), hard links
//	                                (within the volume), sparse files (below)
//	apps/APP/dumps/VOL/000000...    the dump of a volume a dump hook covers, in 4 MiB chunks
//	end.json                        the trailer: counts of what came before (last)
//
// A sparse file is stored as its data segments only, with PAX records ONIONPOD.sparse.map
// ("offset,length,..." of the data) and ONIONPOD.sparse.size (its length): a 2 GB file with a
// few blocks of data takes a few blocks in the archive and on the restored disk. Other tar
// readers see the data segments as the file's content. Sockets, FIFOs and device nodes are
// skipped (counted in the report); setuid and setgid bits are dropped: volumes hold data.
//
// Consistency: volumes a dump hook covers (a database's own dump, e.g. pg_dump) are dumped
// while the app runs; the other volumes are copied with the app quiesced (Source.Quiesce: its
// containers stopped) and resumed after, so the downtime is the time of the copy.
//
// Restore verifies the whole stream before it changes anything: age authenticates every 64 KiB
// chunk and the end of the stream, so a wrong passphrase, a flipped byte or a truncated file is
// refused; the volumes are extracted into staging directories next to their final place (os.Root:
// no entry, and no symlink an entry made, leads outside them), and only once the stream has
// verified to its last byte are the keys restored, the volumes swapped in and the records
// committed, each step undone if a later one fails. Memory is bounded by a few buffers: a 2 GB
// volume streams through.
//
// Nothing here knows the box: Source and Target are the daemon's store, pods and systemd, Keys
// is the onion key store (OnionKeys).
package appbackup
