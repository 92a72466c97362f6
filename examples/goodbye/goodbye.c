/* Says goodbye to each argument, with the same in-tree library as hello. */
#include "greet.h"

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        greet("Goodbye", argv[i]);
    return 0;
}
