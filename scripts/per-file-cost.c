/*
 * The kernel's own work per file, with nothing else running: what ferry cannot avoid.
 *   source side: open, fstat, read (all of it), fstat, close  (what ferry's loader does)
 *   output side: create a temp, write 45% of the size, futimens, close, rename into
 *                place (what the dir sink does)
 * Reading and writing the bytes is kernel work too: on big files it is most of it.
 * Usage: per-file-cost LIST OUTDIR   (LIST: one path per line; OUTDIR: empty, on tmpfs)
 * Prints "source_us output_us" per file. Built and run by scripts/ceiling.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: per-file-cost LIST OUTDIR\n");
    return 2;
  }
  FILE *list = fopen(argv[1], "r");
  if (!list) { perror(argv[1]); return 1; }
  size_t cap = 1024, n = 0;
  char **paths = malloc(cap * sizeof *paths);
  long *sizes = malloc(cap * sizeof *sizes);
  char line[4096];
  while (fgets(line, sizeof line, list)) {
    line[strcspn(line, "\n")] = 0;
    if (n == cap) {
      cap *= 2;
      paths = realloc(paths, cap * sizeof *paths);
      sizes = realloc(sizes, cap * sizeof *sizes);
    }
    paths[n++] = strdup(line);
  }
  double t = now();
  char *buf = malloc(1 << 24);
  for (size_t i = 0; i < n; i++) {
    int fd = open(paths[i], O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) { perror(paths[i]); return 1; }
    struct stat st;
    fstat(fd, &st);
    /* Whole files, in reads of up to 16 MiB (ferry reads 1 MiB segments). */
    for (;;) {
      ssize_t got = read(fd, buf, 1 << 24);
      if (got < 0) { perror("read"); return 1; }
      if (got == 0) break;
    }
    fstat(fd, &st);
    close(fd);
    sizes[i] = st.st_size;
  }
  double source = (now() - t) / n * 1e6;

  /* Outputs of ~45% of the input size, 100 per directory, like a compressed tree. */
  struct timespec times[2] = {{1, 0}, {1, 0}};
  char dir[4096], target[4200], temp[4200];
  t = now();
  for (size_t i = 0; i < n; i++) {
    if (i % 100 == 0) {
      snprintf(dir, sizeof dir, "%s/d%zu", argv[2], i / 100);
      mkdir(dir, 0777);
    }
    snprintf(target, sizeof target, "%s/f%zu.gz", dir, i);
    snprintf(temp, sizeof temp, "%s/.ferry-tmp-0-%zu", dir, i);
    int fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) { perror(temp); return 1; }
    for (long left = sizes[i] * 45 / 100; left > 0;) {
      ssize_t put = write(fd, buf, left < (1 << 24) ? left : (1 << 24));
      if (put < 0) { perror("write"); return 1; }
      left -= put;
    }
    futimens(fd, times);
    close(fd);
    if (rename(temp, target)) { perror("rename"); return 1; }
  }
  double output = (now() - t) / n * 1e6;
  printf("%.1f %.1f\n", source, output);
  return 0;
}
