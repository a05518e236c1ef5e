// The libraries this project measures itself against, bundled for the
// bench page by esbuild.
export { Upload as TusUpload } from "tus-js-client";
export { default as Uppy } from "@uppy/core";
export { default as AwsS3 } from "@uppy/aws-s3";
export { Upload as LibStorageUpload } from "@aws-sdk/lib-storage";
export { S3Client } from "@aws-sdk/client-s3";
