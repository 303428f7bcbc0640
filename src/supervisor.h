#ifndef SUPERVISOR_H
#define SUPERVISOR_H
#endif
