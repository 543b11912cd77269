/*
 * The kernel's own work per file, with nothing else running: what ferry cannot avoid.
 *   source side: open, fstat, read, fstat, close           (what ferry's loader does)
 *   output side: create a temp, write, futimens, close, rename into place (the dir sink)
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
  long max = 1;
  double t = now();
  char *buf = malloc(1 << 24);
  for (size_t i = 0; i < n; i++) {
    int fd = open(paths[i], O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) { perror(paths[i]); return 1; }
    struct stat st;
    fstat(fd, &st);
    long want = st.st_size < (1 << 24) ? st.st_size : (1 << 24);
    if (read(fd, buf, want) < 0) { perror("read"); return 1; }
    fstat(fd, &st);
    close(fd);
    sizes[i] = want;
    if (want > max) max = want;
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
    if (write(fd, buf, sizes[i] * 45 / 100) < 0) { perror("write"); return 1; }
    futimens(fd, times);
    close(fd);
    if (rename(temp, target)) { perror("rename"); return 1; }
  }
  double output = (now() - t) / n * 1e6;
  printf("%.1f %.1f\n", source, output);
  return 0;
}
