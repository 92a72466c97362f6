/* Greets the name found in /read/app.conf (per-instance config). */
#include <stdio.h>
#include <string.h>
#include "greet.h"

int main(void)
{
    char name[256] = "nobody";
    FILE *conf = fopen("/read/app.conf", "r");
    if (conf != NULL) {
        if (fgets(name, sizeof name, conf) != NULL)
            name[strcspn(name, "\n")] = '\0';
        fclose(conf);
    }
    greet("Hello", name);
    return 0;
}
