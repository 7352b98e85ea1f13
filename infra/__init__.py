"""The Pulumi program for AWS, built from the function registry."""
