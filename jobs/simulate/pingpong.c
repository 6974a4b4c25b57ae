/* pingpong.c - one-way latency and bandwidth between two real MPI ranks, the
 * figures behind the intra-node and loopback links of jobs/simulate/platforms.
 *
 *   mpicc -O2 -o pingpong jobs/simulate/pingpong.c
 *   mpirun -np 2 [--mca btl self,vader | --mca btl self,tcp] ./pingpong
 *
 * Prints, for each message size, half the best round trip of REPS repeats
 * (the least disturbed one: the machine may be shared) and bytes / that time. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2) {
        if (rank == 0)
            fprintf(stderr, "pingpong: run on exactly 2 ranks (got %d)\n", size);
        MPI_Finalize();
        return 2;
    }
    const int sizes[] = { 8, 1024, 65536, 1 << 20, 4 << 20, 16 << 20 };
    char *buf = calloc(16 << 20, 1);
    if (!buf) {
        fprintf(stderr, "pingpong: out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const int n = sizes[i], reps = n <= 65536 ? 2000 : 50;
        double best = 1e30;
        for (int k = 0; k < reps; k++) {
            MPI_Barrier(MPI_COMM_WORLD);
            const double t0 = MPI_Wtime();
            if (rank == 0) {
                MPI_Send(buf, n, MPI_BYTE, 1, 0, MPI_COMM_WORLD);
                MPI_Recv(buf, n, MPI_BYTE, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            } else {
                MPI_Recv(buf, n, MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                MPI_Send(buf, n, MPI_BYTE, 0, 0, MPI_COMM_WORLD);
            }
            const double dt = (MPI_Wtime() - t0) / 2;
            best = dt < best ? dt : best;
        }
        if (rank == 0)
            printf("%9d bytes  one-way %9.2f us  %8.3f GB/s\n", n, best * 1e6, n / best * 1e-9);
    }
    free(buf);
    MPI_Finalize();
    return 0;
}
