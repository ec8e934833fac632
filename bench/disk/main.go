// Command disk measures what durable appends cost this machine's disk,
// apart from the spool: the figures behind the 64-writer throughput of
// spool's BenchmarkAppend64. Run it from the repository:
//
//	go run ./bench/disk [-dir DIR]
//
// It prints the median write+fdatasync latency of a 2 KiB and of a
// 100 KiB append (a batch of about 48 messages) into a zeroed file, with
// the CPUs idle and with two goroutines spinning, and how many 100 KiB
// batches one file takes back to back against two files synced at once
// with half-size batches.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const fileSize = 128 << 20

func main() {
	dir := flag.String("dir", os.TempDir(), "directory on the disk to measure")
	flag.Parse()
	var files [2]*os.File
	for i := range files {
		f, err := zeroedFile(filepath.Join(*dir, fmt.Sprintf("sluice-disk-%d", i)))
		if err != nil {
			log.Fatal(err)
		}
		defer os.Remove(f.Name())
		files[i] = f
	}
	for _, busy := range []int{0, 2} {
		for _, size := range []int{2 << 10, 100 << 10} {
			stop := spin(busy)
			p50, err := appendLatency(files[0], size, 400)
			stop()
			if err != nil {
				log.Fatal(err)
			}
			fmt.Printf("write+fdatasync %3d KiB, %d CPUs busy: p50 %v\n", size>>10, busy, p50.Round(time.Microsecond))
		}
	}
	one, err := syncRate(files[:1], 100<<10, 300)
	if err != nil {
		log.Fatal(err)
	}
	two, err := syncRate(files[:], 50<<10, 300)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("back to back: one file, 100 KiB batches: %.0f syncs/s, %.0f MB/s\n", one, one*0.1024)
	fmt.Printf("back to back: two files at once, 50 KiB batches: %.0f syncs/s, %.0f MB/s\n", two, two*0.0512)
}

// zeroedFile creates a file of fileSize whose blocks are all written
// once, as the spool's segments are, so fdatasync commits no extents.
func zeroedFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	zero := make([]byte, 1<<20)
	for off := int64(0); off < fileSize; off += int64(len(zero)) {
		if _, err := f.WriteAt(zero, off); err != nil {
			return nil, err
		}
	}
	return f, unix.Fdatasync(int(f.Fd()))
}

// appendLatency is the median of n appends of size bytes, each made
// durable, at consecutive offsets.
func appendLatency(f *os.File, size, n int) (time.Duration, error) {
	buf := make([]byte, size)
	ds := make([]time.Duration, n)
	for i := range ds {
		t := time.Now()
		if _, err := f.WriteAt(buf, int64(i*size)%fileSize); err != nil {
			return 0, err
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return 0, err
		}
		ds[i] = time.Since(t)
	}
	slices.Sort(ds)
	return ds[n/2], nil
}

// syncRate appends n batches of size bytes to each file, each file on its
// own goroutine, all at once, and returns the fdatasyncs per second done.
func syncRate(files []*os.File, size, n int) (float64, error) {
	buf := make([]byte, size)
	var wg sync.WaitGroup
	errs := make([]error, len(files))
	start := time.Now()
	for k, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if _, err := f.WriteAt(buf, int64(i*size)%fileSize); err != nil {
					errs[k] = err
					return
				}
				if err := unix.Fdatasync(int(f.Fd())); err != nil {
					errs[k] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return float64(len(files)*n) / time.Since(start).Seconds(), nil
}

// spin keeps k goroutines busy on the CPUs until the returned function is
// called.
func spin(k int) (stop func()) {
	var done atomic.Bool
	var wg sync.WaitGroup
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for x := 0; !done.Load(); x++ {
			}
		}()
	}
	return func() { done.Store(true); wg.Wait() }
}
