/* fmtrain.c - placeholder until the config loader lands. */
#include <stdio.h>
int main(void) { return 0; }
