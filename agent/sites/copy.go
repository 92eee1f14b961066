package sites

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// copyTree copies folder src to dst (which must not exist): folders, regular files and
// symlinks with modes, times and, as root, owners. Used when archiving crosses file systems.
func copyTree(src, dst string) error {
	asRoot := os.Geteuid() == 0
	type dirMeta struct {
		path string
		fi   fs.FileInfo
	}
	var dirs []dirMeta
	buf := make([]byte, 256<<10)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, dirMeta{target, fi})
			return nil
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(l, target); err != nil {
				return err
			}
			return chownLike(target, fi, asRoot)
		case fi.Mode().IsRegular():
			if err := copyRegular(p, target, buf); err != nil {
				return err
			}
			if err := chownLike(target, fi, asRoot); err != nil {
				return err
			}
			if err := os.Chmod(target, fi.Mode().Perm()); err != nil {
				return err
			}
			return os.Chtimes(target, fi.ModTime(), fi.ModTime())
		}
		return nil // sockets, fifos, devices: not part of a site
	})
	if err != nil {
		return err
	}
	for _, d := range slices.Backward(dirs) {
		if err := chownLike(d.path, d.fi, asRoot); err != nil {
			return err
		}
		if err := os.Chmod(d.path, d.fi.Mode().Perm()); err != nil {
			return err
		}
		if err := os.Chtimes(d.path, d.fi.ModTime(), d.fi.ModTime()); err != nil {
			return err
		}
	}
	return nil
}

func copyRegular(src, dst string, buf []byte) error {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.CopyBuffer(out, in, buf)
	return errors.Join(err, out.Close())
}

func chownLike(p string, fi fs.FileInfo, asRoot bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !asRoot || !ok {
		return nil
	}
	return os.Lchown(p, int(st.Uid), int(st.Gid))
}
